//! A tiny `log` backend: `kiln: message` lines on stderr, so stdout carries
//! only what a command was asked to print (e.g. the image path).

struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, meta: &log::Metadata) -> bool {
        meta.target().starts_with("kiln")
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let level = match record.level() {
                log::Level::Error => "error: ",
                log::Level::Warn => "warning: ",
                _ => "",
            };
            eprintln!("kiln: {level}{}", record.args());
        }
    }

    fn flush(&self) {}
}

pub fn init(quiet: bool) {
    let _ = log::set_logger(&Stderr);
    log::set_max_level(if quiet {
        log::LevelFilter::Warn
    } else {
        log::LevelFilter::Info
    });
}
