//! The serial console as QEMU writes it: bytes in, lines out, expected and
//! fatal markers tracked. Pure, so it can be tested on a canned transcript.

use std::collections::VecDeque;

/// Lines kept for the `tail` of an outcome.
pub const TAIL_LINES: usize = 30;
/// A line longer than this is cut (a guest that never prints a newline).
const MAX_LINE: usize = 4096;

/// What the console has shown so far.
#[derive(Debug)]
pub struct Console {
    /// Expected substrings and the second each was first seen.
    expect: Vec<(String, Option<f64>)>,
    fail_on: Vec<String>,
    /// The line being received (no newline yet).
    partial: Vec<u8>,
    /// The last byte was `\r`: a following `\n` ends no second line.
    after_cr: bool,
    tail: VecDeque<String>,
}

/// Something the console showed that ends the wait.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Every expected substring has been seen.
    AllSeen,
    /// A `fail_on` substring showed up, in this line.
    Failed { pattern: String, line: String },
}

impl Console {
    pub fn new(expect: &[String], fail_on: &[String]) -> Self {
        Console {
            expect: expect.iter().map(|e| (e.clone(), None)).collect(),
            fail_on: fail_on.to_vec(),
            partial: Vec::new(),
            after_cr: false,
            tail: VecDeque::new(),
        }
    }

    /// Take bytes that arrived `t` seconds after start. Complete lines go
    /// to `on_line` (for the log and the verbose echo). Returns the first
    /// fail_on match, or `AllSeen` once every expected string is seen
    /// (also when nothing is expected). Partial lines are matched too: a
    /// prompt like OVMF's `Shell> ` never ends with a newline.
    pub fn feed(&mut self, bytes: &[u8], t: f64, mut on_line: impl FnMut(&str)) -> Option<Event> {
        let mut event = None;
        for &b in bytes {
            let end = match b {
                b'\n' if self.after_cr => {
                    self.after_cr = false;
                    continue;
                }
                b'\n' | b'\r' => true,
                _ => false,
            };
            self.after_cr = b == b'\r';
            if end || self.partial.len() >= MAX_LINE {
                let line = self.take_line();
                if event.is_none() {
                    event = self.check(&line, t);
                }
                on_line(&line);
                if !end {
                    self.partial.push(b);
                }
            } else {
                self.partial.push(b);
            }
        }
        if event.is_none() && !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&self.partial).into_owned();
            event = self.check(&line, t);
        }
        event.or_else(|| self.all_seen().then_some(Event::AllSeen))
    }

    /// End of output: the partial line, if any, becomes a line.
    pub fn finish(&mut self, t: f64, on_line: impl FnOnce(&str)) -> Option<Event> {
        if self.partial.is_empty() {
            return None;
        }
        let line = self.take_line();
        let event = self.check(&line, t);
        on_line(&line);
        event
    }

    fn take_line(&mut self) -> String {
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.clone());
        line
    }

    fn check(&mut self, line: &str, t: f64) -> Option<Event> {
        for (pattern, seen) in &mut self.expect {
            if seen.is_none() && line.contains(pattern.as_str()) {
                *seen = Some(t);
            }
        }
        self.fail_on
            .iter()
            .find(|f| matches(line, f))
            .map(|f| Event::Failed {
                pattern: f.clone(),
                line: line.to_string(),
            })
    }

    pub fn all_seen(&self) -> bool {
        self.expect.iter().all(|(_, seen)| seen.is_some())
    }

    /// Expected strings with the second each was seen, in the order asked.
    pub fn matched(&self) -> Vec<(String, f64)> {
        self.expect
            .iter()
            .filter_map(|(e, t)| t.map(|t| (e.clone(), t)))
            .collect()
    }

    /// Expected strings not seen yet.
    pub fn missing(&self) -> Vec<String> {
        self.expect
            .iter()
            .filter(|(_, t)| t.is_none())
            .map(|(e, _)| e.clone())
            .collect()
    }

    /// The last lines, the partial one included.
    pub fn tail(&self) -> Vec<String> {
        let mut tail: Vec<String> = self.tail.iter().cloned().collect();
        if !self.partial.is_empty() {
            tail.push(String::from_utf8_lossy(&self.partial).into_owned());
        }
        let skip = tail.len().saturating_sub(TAIL_LINES);
        tail.split_off(skip)
    }
}

/// A fail_on pattern: a substring anywhere in the line, or with a leading
/// `^` at the line's start only (a firmware prompt like U-Boot's `=> `,
/// which a kernel or service line may well contain further along).
fn matches(line: &str, pattern: &str) -> bool {
    match pattern.strip_prefix('^') {
        Some(start) => line.starts_with(start),
        None => line.contains(pattern),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    /// A boot transcript as the serial port delivers it: CRLF, escape
    /// codes, a stray byte before a marker, chunks cut mid-line.
    const TRANSCRIPT: &[&[u8]] = &[
        b"\x1b[2J\x1b[01;01HBdsDxe: loading Boot0001 \"UEFI Misc Device\"\r\n",
        b"[    0.000000] Linux version 6.1.0-28-amd64\r\n[    1.2] Run /init as init pro",
        b"cess\r\n\xffkiln-in",
        b"it: root mounted\r\nprogress 10%\rprogress 100%\r\n",
        b"kiln-firstboot: node ready\r\n",
    ];

    #[test]
    fn expects_are_seen_in_any_order_across_chunks() {
        let mut c = Console::new(
            &strings(&["node ready", "kiln-init: root mounted"]),
            &strings(&["Kernel panic"]),
        );
        let mut lines = Vec::new();
        let mut events = Vec::new();
        for (i, chunk) in TRANSCRIPT.iter().enumerate() {
            events.push(c.feed(chunk, i as f64, |l| lines.push(l.to_string())));
        }
        assert_eq!(events, [None, None, None, None, Some(Event::AllSeen)]);
        assert_eq!(
            c.matched(),
            [
                ("node ready".to_string(), 4.0),
                ("kiln-init: root mounted".to_string(), 3.0)
            ]
        );
        assert!(c.missing().is_empty());
        assert_eq!(lines[1], "[    0.000000] Linux version 6.1.0-28-amd64");
        assert_eq!(lines[2], "[    1.2] Run /init as init process");
        assert_eq!(
            lines[3], "\u{fffd}kiln-init: root mounted",
            "stray byte kept, marker still found"
        );
        assert_eq!(
            lines[4..6],
            ["progress 10%", "progress 100%"],
            "a lone CR ends a line"
        );
        assert_eq!(lines.len(), 7, "CRLF is one line end");
        assert_eq!(c.tail().len(), 7);
    }

    #[test]
    fn fail_on_matches_a_prompt_without_newline() {
        let mut c = Console::new(
            &strings(&["kiln: ready"]),
            &strings(&["Kernel panic", "Shell>"]),
        );
        assert_eq!(
            c.feed(b"UEFI Interactive Shell v2.2\r\n", 1.0, |_| {}),
            None
        );
        let ev = c.feed(b"\x1b[08;01H\x1b[1m\x1b[33m\x1b[40mShell", 2.0, |_| {});
        assert_eq!(ev, None);
        let ev = c.feed(b"> \x1b[0m", 3.0, |_| {});
        assert!(
            matches!(ev, Some(Event::Failed { ref pattern, .. }) if pattern == "Shell>"),
            "{ev:?}"
        );
        assert_eq!(c.missing(), ["kiln: ready"]);
        assert!(c.tail().last().unwrap().contains("Shell>"));
    }

    #[test]
    fn anchored_fail_on_matches_only_at_the_line_start() {
        let mut c = Console::new(&strings(&["kiln: ready"]), &strings(&["^=> "]));
        assert_eq!(c.feed(b"[ 3.1] rule a => b applied\r\n", 1.0, |_| {}), None);
        let ev = c.feed(b"Not retrying...\r\n=> ", 2.0, |_| {});
        assert!(
            matches!(ev, Some(Event::Failed { ref pattern, .. }) if pattern == "^=> "),
            "{ev:?}"
        );
    }

    #[test]
    fn fail_on_wins_over_a_later_expect_in_the_same_chunk() {
        let mut c = Console::new(&strings(&["ready"]), &strings(&["kiln-init: ERROR"]));
        let ev = c.feed(
            b"kiln-init: ERROR no root partition\r\nready\r\n",
            0.5,
            |_| {},
        );
        assert_eq!(
            ev,
            Some(Event::Failed {
                pattern: "kiln-init: ERROR".into(),
                line: "kiln-init: ERROR no root partition".into()
            })
        );
    }

    #[test]
    fn nothing_expected_is_all_seen_and_tail_is_bounded() {
        let mut c = Console::new(&[], &[]);
        let mut text = Vec::new();
        for i in 0..100 {
            text.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        assert_eq!(c.feed(&text, 0.0, |_| {}), Some(Event::AllSeen));
        let tail = c.tail();
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.last().unwrap(), "line 99");
        let mut c = Console::new(&[], &[]);
        let mut n = 0;
        c.feed(&vec![b'x'; MAX_LINE * 2 + 10], 0.0, |_| n += 1);
        assert_eq!(n, 2, "overlong lines are cut");
        let mut last = String::new();
        assert_eq!(c.finish(1.0, |l| last = l.to_string()), None);
        assert_eq!(last.len(), 10);
    }
}
