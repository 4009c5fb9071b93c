//! "Did you mean ...?" for misspelt option names.

use crate::work;

/// Levenshtein distance between two strings, compared case-insensitively
/// (systemd keys are case-sensitive, but a wrong case is a typo worth
/// pointing out).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().flat_map(char::to_lowercase).collect();
    let b: Vec<char> = b.chars().flat_map(char::to_lowercase).collect();
    work::charge((a.len() + 1) * (b.len() + 1));
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate closest to `word`, if any is close enough to be a likely
/// typo: at most a third of the word's length away (and at least 1).
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    // Lengths as `edit_distance` compares them.
    let length = word.chars().flat_map(char::to_lowercase).count();
    candidates
        .into_iter()
        // The distance is at least the difference in length: a candidate
        // too short or too long cannot be near, and is not compared (so a
        // long word costs nothing).
        .filter(|c| {
            c.chars()
                .flat_map(char::to_lowercase)
                .count()
                .abs_diff(length)
                <= limit
        })
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// A message for an unknown key in `section`, suggesting the nearest known
/// key when there is one.
pub fn unknown_key_message<'a>(
    section: &str,
    key: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> String {
    match nearest(key, known) {
        Some(near) => format!("unknown key in [{section}]; did you mean {near}?"),
        None => format!("unknown key in [{section}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("MachineOf", "MachineOf"), 0);
        assert_eq!(edit_distance("MachinOf", "MachineOf"), 1);
        assert_eq!(edit_distance("machineof", "MachineOf"), 0);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestions() {
        let known = [
            "MachineID",
            "MachineOf",
            "MachineMetadata",
            "Conflicts",
            "Global",
        ];
        assert_eq!(nearest("MachineMetdata", known), Some("MachineMetadata"));
        assert_eq!(nearest("Conflict", known), Some("Conflicts"));
        assert_eq!(nearest("Image", known), None);
    }
}
