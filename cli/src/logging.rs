//! Log output of the daemons: plain lines on stderr, which systemd sends to
//! the journal. `FLOTILLA_LOG` sets the level (`error`, `warn`, `info`,
//! `debug`, `trace`; default `info`).

use tracing_subscriber::filter::LevelFilter;

pub fn init() {
    let level = std::env::var("FLOTILLA_LOG")
        .ok()
        .and_then(|l| l.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    // Under systemd the journal adds its own timestamps.
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = if under_systemd {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
    // Only fails when a subscriber is already installed, which is fine.
    let _ = result;
}
