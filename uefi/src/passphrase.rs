//! The passphrase prompt of an encrypted image: line editing over the
//! firmware's keys, the bound on the line, and the tries.
//!
//! The driver (`src/driver/prompt.rs`) only prints and reads keys from the
//! firmware's `ConIn`; what a key does, how long a passphrase may be and
//! when to give up are here, tested on the host. Three tries, as
//! cryptsetup's initramfs scripts give (and this project's own boot
//! script); each wrong one is said, then the caller refuses the image.
//! Nothing typed is echoed, as cryptsetup does not.

use alloc::boxed::Box;
use core::fmt;

use zeroize::Zeroize;

/// Longest passphrase the prompt takes, in bytes of UTF-8: far above any
/// typed passphrase, and the line's buffer is allocated at this size once.
pub const MAX_PASSPHRASE_BYTES: usize = 512;

/// Tries before the image is refused (cryptsetup's initramfs scripts: 3).
pub const TRIES: u32 = 3;

/// `EFI_INPUT_KEY` scan code of Delete.
const SCAN_DELETE: u16 = 0x08;
/// `EFI_INPUT_KEY` scan code of Escape.
const SCAN_ESC: u16 = 0x17;
/// `CHAR_BACKSPACE`.
const BACKSPACE: u16 = 0x08;
/// `CHAR_CARRIAGE_RETURN`: what UEFI reports for Enter.
const CARRIAGE_RETURN: u16 = 0x0d;
/// DEL, what a serial terminal's backspace key sends.
const DEL: u16 = 0x7f;

/// A key as the prompt sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A character to add to the passphrase.
    Char(char),
    /// Removes the last character.
    Erase,
    /// Ends the line.
    Enter,
    /// Gives up: the image is not attached.
    Escape,
    /// Anything else (arrows, function keys, control characters).
    Ignored,
}

impl Key {
    /// The key an `EFI_INPUT_KEY` stands for.
    ///
    /// Delete erases too: EDK2's terminal driver reports a serial
    /// terminal's backspace key (DEL) as the Delete scan code for every
    /// terminal type but `TtyTerm`, and there is no cursor to delete at.
    /// A line feed is ignored: UEFI's Enter is a carriage return, and a
    /// terminal sending both must not end the next line empty.
    pub fn from_input(scan_code: u16, unicode: u16) -> Key {
        match (scan_code, unicode) {
            (SCAN_ESC, _) => Key::Escape,
            (SCAN_DELETE, _) => Key::Erase,
            (0, CARRIAGE_RETURN) => Key::Enter,
            (0, BACKSPACE | DEL) => Key::Erase,
            (0, unicode) if unicode >= 0x20 => {
                char::from_u32(u32::from(unicode)).map_or(Key::Ignored, Key::Char)
            }
            _ => Key::Ignored,
        }
    }
}

/// How a line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Enter, with at most [`MAX_PASSPHRASE_BYTES`] typed.
    Entered,
    /// Enter after more than [`MAX_PASSPHRASE_BYTES`]: the line is empty
    /// and counts as a wrong try.
    TooLong,
    /// Escape.
    GaveUp,
}

/// The line being typed: UTF-8 in one buffer allocated once, at the bound,
/// and zeroized when cleared and when dropped (it never moves or grows, so
/// no copy of the passphrase is left behind).
pub struct Line {
    bytes: Box<[u8; MAX_PASSPHRASE_BYTES]>,
    len: usize,
    /// More was typed than fits: the rest of the line is swallowed.
    overflowed: bool,
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

impl Line {
    /// An empty line.
    pub fn new() -> Self {
        Line {
            bytes: Box::new([0; MAX_PASSPHRASE_BYTES]),
            len: 0,
            overflowed: false,
        }
    }

    /// The passphrase typed so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Empties the line, zeroizing what was typed.
    pub fn clear(&mut self) {
        self.bytes.zeroize();
        self.len = 0;
        self.overflowed = false;
    }

    /// Applies `key`; `Some` when it ends the line.
    pub fn key(&mut self, key: Key) -> Option<Ending> {
        match key {
            Key::Enter if self.overflowed => {
                self.clear();
                Some(Ending::TooLong)
            }
            Key::Enter => Some(Ending::Entered),
            Key::Escape => {
                self.clear();
                Some(Ending::GaveUp)
            }
            // Over the bound, nothing typed is kept: erasing cannot bring
            // back what was dropped.
            Key::Erase if self.overflowed => None,
            Key::Erase => {
                // The last character: its UTF-8 continuation bytes first.
                while self.len > 0 && self.bytes[self.len - 1] & 0xc0 == 0x80 {
                    self.len -= 1;
                    self.bytes[self.len] = 0;
                }
                if self.len > 0 {
                    self.len -= 1;
                    self.bytes[self.len] = 0;
                }
                None
            }
            Key::Char(c) => {
                let mut utf8 = [0u8; 4];
                let encoded = c.encode_utf8(&mut utf8).as_bytes();
                match self.bytes.get_mut(self.len..self.len + encoded.len()) {
                    Some(room) if !self.overflowed => {
                        room.copy_from_slice(encoded);
                        self.len += encoded.len();
                    }
                    _ => {
                        self.bytes.zeroize();
                        self.len = 0;
                        self.overflowed = true;
                    }
                }
                utf8.zeroize();
                None
            }
            Key::Ignored => None,
        }
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

/// The console the prompt runs on: the firmware's, or a test's.
pub trait Console {
    /// Shows the prompt (no line end: the passphrase is typed after it).
    fn prompt(&mut self);
    /// The next key, waiting for one; `None` when the console cannot be read.
    fn key(&mut self) -> Option<Key>;
    /// Ends the prompt's line (after Enter or Escape).
    fn end_line(&mut self);
    /// One line saying why a try failed.
    fn say(&mut self, message: fmt::Arguments);
}

/// What one try with a passphrase came to.
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// The passphrase opened the image.
    Opened(T),
    /// The passphrase is wrong: ask again.
    Wrong(E),
    /// Something else failed: not retried.
    Failed(E),
}

/// Why no passphrase opened the image.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal<E> {
    /// Escape at the prompt.
    GaveUp,
    /// The console could not be read.
    NoInput,
    /// Every try was wrong or too long: the last wrong one's error, if any.
    Exhausted {
        /// The error of the last passphrase tried (`None` if every line
        /// was too long).
        last: Option<E>,
    },
    /// A try failed for another reason than the passphrase.
    Failed(E),
}

impl<E: fmt::Display> fmt::Display for Refusal<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::GaveUp => f.write_str("no passphrase given (Escape at the prompt)"),
            Refusal::NoInput => f.write_str("the console cannot be read to ask for the passphrase"),
            Refusal::Exhausted { last: Some(error) } => write!(f, "{error} ({TRIES} tries)"),
            Refusal::Exhausted { last: None } => write!(
                f,
                "no passphrase of at most {MAX_PASSPHRASE_BYTES} bytes was typed ({TRIES} tries)"
            ),
            Refusal::Failed(error) => write!(f, "{error}"),
        }
    }
}

/// Asks for the passphrase on `console` and gives each line to `attempt`,
/// at most [`TRIES`] times. The line is zeroized after each try.
pub fn ask<T, E>(
    console: &mut impl Console,
    mut attempt: impl FnMut(&[u8]) -> Attempt<T, E>,
) -> Result<T, Refusal<E>> {
    let mut line = Line::new();
    let mut last = None;
    for try_number in 1..=TRIES {
        line.clear();
        console.prompt();
        let ending = loop {
            let Some(key) = console.key() else {
                console.end_line();
                return Err(Refusal::NoInput);
            };
            if let Some(ending) = line.key(key) {
                break ending;
            }
        };
        console.end_line();
        match ending {
            Ending::GaveUp => return Err(Refusal::GaveUp),
            Ending::TooLong => console.say(format_args!(
                "the passphrase is longer than {MAX_PASSPHRASE_BYTES} bytes (try {try_number} of {TRIES})"
            )),
            Ending::Entered => {
                let result = attempt(line.as_bytes());
                line.clear();
                match result {
                    Attempt::Opened(opened) => return Ok(opened),
                    Attempt::Failed(error) => return Err(Refusal::Failed(error)),
                    Attempt::Wrong(error) => {
                        console.say(format_args!(
                            "wrong passphrase (try {try_number} of {TRIES})"
                        ));
                        last = Some(error);
                    }
                }
            }
        }
    }
    Err(Refusal::Exhausted { last })
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;

    /// Keys typed as text: `\r` Enter, `\x1b` Escape, `\x08` Backspace.
    fn keys(text: &str) -> Vec<Key> {
        text.encode_utf16()
            .map(|unit| match unit {
                0x1b => Key::from_input(SCAN_ESC, 0),
                unit => Key::from_input(0, unit),
            })
            .collect()
    }

    /// A console that types `keys` and records what was printed.
    struct Scripted {
        keys: Vec<Key>,
        next: usize,
        printed: String,
    }

    impl Scripted {
        fn new(typed: &str) -> Self {
            Scripted {
                keys: keys(typed),
                next: 0,
                printed: String::new(),
            }
        }
    }

    impl Console for Scripted {
        fn prompt(&mut self) {
            self.printed.push_str("Passphrase: ");
        }
        fn key(&mut self) -> Option<Key> {
            let key = self.keys.get(self.next).copied();
            self.next += 1;
            key
        }
        fn end_line(&mut self) {
            self.printed.push('\n');
        }
        fn say(&mut self, message: fmt::Arguments) {
            self.printed.push_str(&message.to_string());
            self.printed.push('\n');
        }
    }

    /// Opens with `right`; records every passphrase tried.
    fn unlock<'a>(
        tried: &'a mut Vec<Vec<u8>>,
        right: &[u8],
    ) -> impl FnMut(&[u8]) -> Attempt<u32, &'static str> + 'a {
        let right = right.to_vec();
        move |passphrase: &[u8]| {
            tried.push(passphrase.to_vec());
            if passphrase == right {
                Attempt::Opened(7)
            } else {
                Attempt::Wrong("invalid passphrase")
            }
        }
    }

    #[test]
    fn firmware_keys_map_to_edits() {
        assert_eq!(Key::from_input(0, 0x0d), Key::Enter);
        assert_eq!(Key::from_input(0, 0x0a), Key::Ignored);
        assert_eq!(Key::from_input(0, 0x08), Key::Erase);
        assert_eq!(Key::from_input(0, 0x7f), Key::Erase);
        assert_eq!(Key::from_input(SCAN_DELETE, 0), Key::Erase);
        assert_eq!(Key::from_input(SCAN_ESC, 0), Key::Escape);
        assert_eq!(Key::from_input(0x01, 0), Key::Ignored); // up arrow
        assert_eq!(Key::from_input(0, 0x03), Key::Ignored);
        assert_eq!(Key::from_input(0, 0xd800), Key::Ignored); // lone surrogate
        assert_eq!(Key::from_input(0, u16::from(b'a')), Key::Char('a'));
        assert_eq!(Key::from_input(0, 0xe9), Key::Char('é'));
    }

    #[test]
    fn backspace_erases_whole_characters() {
        let mut line = Line::new();
        for key in keys("pa\x08ass wö\x08o\x01rd") {
            assert_eq!(line.key(key), None);
        }
        assert_eq!(line.as_bytes(), b"pass word");
        assert_eq!(line.key(Key::Enter), Some(Ending::Entered));
        // Erasing an empty line is nothing.
        let mut empty = Line::new();
        assert_eq!(empty.key(Key::Erase), None);
        assert_eq!(empty.as_bytes(), b"");
    }

    #[test]
    fn a_line_over_the_bound_is_dropped_whole_and_ends_as_too_long() {
        let mut line = Line::new();
        let buffer = line.bytes.as_ptr();
        for _ in 0..MAX_PASSPHRASE_BYTES {
            assert_eq!(line.key(Key::Char('x')), None);
        }
        assert_eq!(line.as_bytes().len(), MAX_PASSPHRASE_BYTES);
        assert_eq!(line.key(Key::Char('y')), None);
        assert_eq!(line.key(Key::Erase), None);
        assert_eq!(line.as_bytes(), b"");
        assert!(line.bytes.iter().all(|&byte| byte == 0));
        assert_eq!(line.key(Key::Enter), Some(Ending::TooLong));
        // One buffer, never moved.
        assert_eq!(line.bytes.as_ptr(), buffer);
        // A two-byte character that does not fit whole overflows too.
        let mut line = Line::new();
        for _ in 0..MAX_PASSPHRASE_BYTES - 1 {
            line.key(Key::Char('x'));
        }
        line.key(Key::Char('é'));
        assert_eq!(line.key(Key::Enter), Some(Ending::TooLong));
    }

    #[test]
    fn the_right_passphrase_at_the_first_try_opens() {
        let mut console = Scripted::new("secret\r");
        let mut tried = Vec::new();
        assert_eq!(ask(&mut console, unlock(&mut tried, b"secret")), Ok(7));
        assert_eq!(tried, [b"secret".to_vec()]);
        assert_eq!(console.printed, "Passphrase: \n");
    }

    #[test]
    fn each_wrong_passphrase_is_said_and_the_third_refuses() {
        let mut console = Scripted::new("one\rtwo\rthree\rsecret\r");
        let mut tried = Vec::new();
        let refusal = ask(&mut console, unlock(&mut tried, b"secret")).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::Exhausted {
                last: Some("invalid passphrase")
            }
        );
        assert_eq!(tried.len(), 3);
        assert_eq!(
            console.printed,
            "Passphrase: \nwrong passphrase (try 1 of 3)\n\
             Passphrase: \nwrong passphrase (try 2 of 3)\n\
             Passphrase: \nwrong passphrase (try 3 of 3)\n"
        );
        assert_eq!(refusal.to_string(), "invalid passphrase (3 tries)");
    }

    #[test]
    fn the_second_try_may_open_and_a_too_long_line_is_a_try() {
        let long: String = core::iter::repeat_n('x', MAX_PASSPHRASE_BYTES + 1).collect();
        let mut console = Scripted::new(&(long + "\rsecret\r"));
        let mut tried = Vec::new();
        assert_eq!(ask(&mut console, unlock(&mut tried, b"secret")), Ok(7));
        // The long line never reached the unlock.
        assert_eq!(tried, [b"secret".to_vec()]);
        assert!(console
            .printed
            .contains("the passphrase is longer than 512 bytes (try 1 of 3)"));
    }

    #[test]
    fn escape_gives_up_and_a_console_without_keys_is_no_input() {
        let mut tried = Vec::new();
        let mut console = Scripted::new("wrong\rsec\x1b");
        let refusal = ask(&mut console, unlock(&mut tried, b"secret")).unwrap_err();
        assert_eq!(refusal, Refusal::GaveUp);
        assert_eq!(tried.len(), 1);
        let mut silent = Scripted::new("sec");
        let refusal = ask(&mut silent, unlock(&mut tried, b"secret")).unwrap_err();
        assert_eq!(refusal, Refusal::NoInput);
    }

    #[test]
    fn another_failure_is_not_retried() {
        let mut console = Scripted::new("secret\rsecret\r");
        let mut tries = 0;
        let refusal = ask(&mut console, |_| {
            tries += 1;
            Attempt::<(), _>::Failed("read error")
        })
        .unwrap_err();
        assert_eq!(refusal, Refusal::Failed("read error"));
        assert_eq!(tries, 1);
    }
}
