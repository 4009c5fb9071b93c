//! Making tokens: their format is `flotilla_proto::token`'s; the random
//! bytes come from the operating system.

pub use flotilla_proto::token::*;

/// The operating system could not give random bytes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no randomness from the operating system: {0}")]
pub struct RandomError(String);

/// `len` random bytes from the operating system.
pub fn random_bytes(len: usize) -> Result<Vec<u8>, RandomError> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(|e| RandomError(e.to_string()))?;
    Ok(bytes)
}

/// A new token with a random id and secret.
pub fn generate() -> Result<Token, RandomError> {
    let mut id = [0u8; ID_HEX_LEN / 2];
    let mut secret = [0u8; SECRET_HEX_LEN / 2];
    getrandom::fill(&mut id).map_err(|e| RandomError(e.to_string()))?;
    getrandom::fill(&mut secret).map_err(|e| RandomError(e.to_string()))?;
    Ok(Token::from_random(id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_differ() {
        let a = generate().unwrap();
        assert_ne!(a, generate().unwrap());
        assert_eq!(Token::parse(&a.expose()).unwrap(), a);
    }
}
