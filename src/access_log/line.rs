//! One access log line, written into a byte buffer: JSON (one object) or
//! text (`key=value` pairs, logfmt style). Every value a client can shape
//! (path, host, user agent, request id, ...) is escaped so that no byte of it
//! can end the line, open a field or break the JSON: CR, LF and every other
//! control byte come out as escapes, never as themselves.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{LogField, LogFormat};

/// A value of one field.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// Not known for this request (left out of JSON, `-` in text).
    Absent,
    /// Bytes from the wire: escaped.
    Text(&'a [u8]),
    /// Text the proxy made or validated (names, addresses, labels, hex ids:
    /// printable ASCII without quotes, backslashes or spaces): copied as is.
    Plain(&'a str),
    /// [`Value::Plain`] as bytes, for text the proxy made as bytes (an
    /// address it formatted, an id it generated): no UTF-8 check per line.
    PlainBytes(&'a [u8]),
    Int(u64),
    /// Milliseconds with three decimals.
    Millis(std::time::Duration),
    /// RFC 3339 UTC with milliseconds.
    Time(SystemTime),
}

/// Writes fields one after another into `out`.
#[derive(Debug)]
pub struct LineWriter<'a> {
    out: &'a mut Vec<u8>,
    format: LogFormat,
    first: bool,
    /// Where the line begins in `out`.
    start: usize,
}

impl<'a> LineWriter<'a> {
    #[inline(always)]
    pub fn new(out: &'a mut Vec<u8>, format: LogFormat) -> Self {
        let start = out.len();
        Self {
            out,
            format,
            first: true,
            start,
        }
    }

    /// Writes one field. In JSON an absent value leaves its key out (a
    /// reader takes a missing key for null); text writes `-`.
    #[inline(always)]
    pub fn field(&mut self, field: LogField, value: Value<'_>) {
        if self.format == LogFormat::Json && matches!(value, Value::Absent) {
            return;
        }
        let out = &mut *self.out;
        // Keys come with their separator (and, in JSON, a string's opening
        // quote): one copy per key. A JSON line's first key has its comma
        // turned into the `{`; a text line's first key skips its space.
        let first = self.first;
        self.first = false;
        match self.format {
            LogFormat::Json => {
                json_field(out, field, value);
                if first && let Some(b) = out.get_mut(self.start) {
                    *b = b'{';
                }
            }
            LogFormat::Text => {
                out.extend_from_slice(&field.text_key().as_bytes()[usize::from(first)..]);
                text_value(out, value);
            }
        }
    }

    /// Closes the line (with its newline).
    pub fn end(self) {
        if self.format == LogFormat::Json {
            if self.first {
                self.out.push(b'{');
            }
            self.out.push(b'}');
        }
        self.out.push(b'\n');
    }
}

/// A JSON field: its key (with the comma before it), then its value.
#[inline(always)]
fn json_field(out: &mut Vec<u8>, field: LogField, value: Value<'_>) {
    let quoted = |out: &mut Vec<u8>| key16(out, field.json_key16_quoted());
    let key = |out: &mut Vec<u8>| key16(out, field.json_key16());
    match value {
        Value::Absent => {
            key(out);
            out.extend_from_slice(b"null");
        }
        Value::Plain(p) => {
            debug_assert!(is_plain(p.as_bytes()), "{p:?}");
            quoted(out);
            out.extend_from_slice(p.as_bytes());
            out.push(b'"');
        }
        Value::PlainBytes(p) => {
            debug_assert!(is_plain(p), "{p:?}");
            quoted(out);
            out.extend_from_slice(p);
            out.push(b'"');
        }
        Value::Text(t) => {
            quoted(out);
            json_escape(out, t);
            out.push(b'"');
        }
        Value::Int(n) => {
            key(out);
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        }
        Value::Millis(d) => {
            key(out);
            millis(out, d);
        }
        Value::Time(t) => {
            quoted(out);
            rfc3339(out, t);
            out.push(b'"');
        }
    }
}

fn text_value(out: &mut Vec<u8>, value: Value<'_>) {
    match value {
        Value::Absent => out.push(b'-'),
        Value::Plain(p) => {
            debug_assert!(is_plain(p.as_bytes()), "{p:?}");
            out.extend_from_slice(p.as_bytes());
        }
        Value::PlainBytes(p) => {
            debug_assert!(is_plain(p), "{p:?}");
            out.extend_from_slice(p);
        }
        Value::Text([]) => out.extend_from_slice(b"\"\""),
        Value::Text(t)
            if t.iter()
                .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\') =>
        {
            out.extend_from_slice(t)
        }
        Value::Text(t) => {
            out.push(b'"');
            text_escape(out, t);
            out.push(b'"');
        }
        Value::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        Value::Millis(d) => millis(out, d),
        Value::Time(t) => rfc3339(out, t),
    }
}

/// Appends a padded key: all 16 bytes (a fixed-size copy), then the
/// padding cut off again.
#[inline(always)]
fn key16(out: &mut Vec<u8>, (bytes, len): &crate::config::Key16) {
    let at = out.len();
    out.extend_from_slice(bytes);
    out.truncate(at + usize::from(*len));
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// What [`Value::Plain`] promises.
fn is_plain(p: &[u8]) -> bool {
    !p.is_empty()
        && p.iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// Bytes a JSON string cannot hold as they are (or that this log escapes):
/// control bytes, `"`, `\\`, DEL; and the bytes of non-ASCII text, which
/// are passed only when they form valid UTF-8.
const JSON_SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = b < 0x20 || b == b'"' as usize || b == b'\\' as usize || b >= 0x7f;
        b += 1;
    }
    t
};

/// JSON string content: runs of plain ASCII are copied whole; valid UTF-8
/// passes; `"`, `\\` and control characters are escaped; a byte that is not
/// UTF-8 is written as `\u00XX`, so the line stays valid JSON whatever the
/// client sent.
fn json_escape(out: &mut Vec<u8>, mut t: &[u8]) {
    while let Some(at) = t.iter().position(|&b| JSON_SPECIAL[usize::from(b)]) {
        out.extend_from_slice(&t[..at]);
        t = &t[at..];
        let b = t[0];
        if b >= 0x80 {
            // A run of non-ASCII text: what of it is valid UTF-8 passes.
            let run = t.iter().position(|&c| c < 0x80).unwrap_or(t.len());
            let valid = match std::str::from_utf8(&t[..run]) {
                Ok(_) => run,
                Err(e) => e.valid_up_to(),
            };
            if valid > 0 {
                out.extend_from_slice(&t[..valid]);
                t = &t[valid..];
                continue;
            }
        }
        if !common_escape(out, b) {
            unicode_escape(out, b);
        }
        t = &t[1..];
    }
    out.extend_from_slice(t);
}

/// The escapes both formats share (`\\"`, `\\\\`, `\\n`, `\\r`, `\\t`);
/// false when `b` is none of them.
fn common_escape(out: &mut Vec<u8>, b: u8) -> bool {
    let e: &[u8] = match b {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        _ => return false,
    };
    out.extend_from_slice(e);
    true
}

fn unicode_escape(out: &mut Vec<u8>, b: u8) {
    out.extend_from_slice(b"\\u00");
    out.push(HEX[usize::from(b >> 4)]);
    out.push(HEX[usize::from(b & 0xf)]);
}

/// Inside a quoted text value: printable ASCII as is (but `"` and `\`),
/// everything else as `\n`, `\r`, `\t` or `\xHH`.
fn text_escape(out: &mut Vec<u8>, t: &[u8]) {
    for &b in t {
        if common_escape(out, b) {
            continue;
        }
        if matches!(b, b' '..=b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(b"\\x");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        }
    }
}

fn millis(out: &mut Vec<u8>, d: std::time::Duration) {
    // u64 arithmetic: `as_micros` is a u128, and its division a call.
    let ms = d.as_secs().saturating_mul(1000) + u64::from(d.subsec_millis());
    let frac = d.subsec_micros() % 1000;
    out.extend_from_slice(itoa::Buffer::new().format(ms).as_bytes());
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// `2026-12-05T12:03:32.123Z` (years 0 to 9999). The text up to the
/// seconds is kept per thread and made again only when the second changes:
/// a busy thread writes many lines a second.
pub fn rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    thread_local! {
        static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
    }
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (at, mut text) = SECOND.get();
    if at != secs {
        text = up_to_seconds(secs);
        SECOND.set((secs, text));
    }
    let ms = u64::from(since.subsec_millis());
    let digit = |n: u64| b'0' + (n % 10) as u8;
    out.extend_from_slice(&text);
    out.extend_from_slice(&[b'.', digit(ms / 100), digit(ms / 10), digit(ms), b'Z']);
}

/// `2026-12-05T12:03:32` for `secs` since the epoch.
fn up_to_seconds(secs: u64) -> [u8; 19] {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let day = secs % 86_400;
    let digit = |n: u64| b'0' + (n % 10) as u8;
    let y = y.clamp(0, 9999) as u64;
    [
        digit(y / 1000),
        digit(y / 100),
        digit(y / 10),
        digit(y),
        b'-',
        digit(m / 10),
        digit(m),
        b'-',
        digit(d / 10),
        digit(d),
        b'T',
        digit(day / 36_000),
        digit(day / 3600),
        b':',
        digit(day / 600 % 6),
        digit(day / 60),
        b':',
        digit(day % 60 / 10),
        digit(day),
    ]
}

/// Year, month and day of a count of days since 1970-01-01 (the proleptic
/// Gregorian calendar; Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u64, u64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097) as u64;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe as i64 + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn line(format: LogFormat, values: &[(LogField, Value<'_>)]) -> String {
        let mut out = Vec::new();
        let mut w = LineWriter::new(&mut out, format);
        for (f, v) in values {
            w.field(*f, *v);
        }
        w.end();
        String::from_utf8(out).unwrap_or_else(|e| panic!("not UTF-8: {e}"))
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000Z"),
            (951_782_400, 7, "2000-02-29T00:00:00.007Z"),
            (1_796_472_212, 123, "2026-12-05T12:03:32.123Z"),
            (4_102_444_799, 999, "2099-12-31T23:59:59.999Z"),
        ];
        for (secs, ms, want) in cases {
            let mut out = Vec::new();
            rfc3339(
                &mut out,
                UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms),
            );
            assert_eq!(String::from_utf8_lossy(&out), want);
        }
    }

    #[test]
    fn hostile_bytes_never_split_a_line_or_break_json() {
        let evil: &[u8] =
            b"/a\r\nX-Injected: 1\n\"},{\"status\":200\x00\x1b[31m\x7f\xff\xfe end \\";
        let json = line(
            LogFormat::Json,
            &[
                (LogField::Path, Value::Text(evil)),
                (LogField::Status, Value::Int(404)),
                (LogField::Route, Value::Absent),
            ],
        );
        assert_eq!(json.matches('\n').count(), 1, "{json}");
        assert!(json.ends_with("}\n"));
        let parsed: serde_json::Value =
            serde_json::from_str(json.trim_end()).unwrap_or_else(|e| panic!("{e}: {json}"));
        assert_eq!(parsed["status"], 404);
        assert!(
            parsed.get("route").is_none(),
            "an absent value leaves its key out"
        );
        let path = parsed["path"].as_str().unwrap_or_default();
        assert!(path.starts_with("/a\r\nX-Injected: 1\n\"},{"), "{path:?}");
        assert!(
            path.contains('\u{ff}') && path.contains('\u{1b}'),
            "{path:?}"
        );

        let text = line(
            LogFormat::Text,
            &[
                (LogField::Path, Value::Text(evil)),
                (LogField::Status, Value::Int(404)),
                (LogField::UserAgent, Value::Text(b"curl/8.0")),
                (LogField::Route, Value::Absent),
                (LogField::Host, Value::Text(b"")),
            ],
        );
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert!(!text.contains('\r'), "{text}");
        assert!(
            text.contains(
                r#"path="/a\r\nX-Injected: 1\n\"},{\"status\":200\x00\x1b[31m\x7f\xff\xfe end \\""#
            ),
            "{text}"
        );
        assert!(
            text.contains(" status=404 user_agent=curl/8.0 route=- host=\"\"\n"),
            "{text}"
        );
    }

    #[test]
    fn a_json_line_opens_at_its_first_present_field_and_may_be_empty() {
        let none = line(LogFormat::Json, &[(LogField::Route, Value::Absent)]);
        assert_eq!(none, "{}\n");
        let later = line(
            LogFormat::Json,
            &[
                (LogField::Route, Value::Absent),
                (LogField::Status, Value::Int(200)),
                (LogField::Group, Value::Plain("blue")),
            ],
        );
        assert_eq!(later, "{\"status\":200,\"group\":\"blue\"}\n");
        let mut out = b"{\"earlier\":1}\n".to_vec();
        let mut w = LineWriter::new(&mut out, LogFormat::Json);
        w.field(LogField::Status, Value::Int(404));
        w.end();
        assert_eq!(
            out, b"{\"earlier\":1}\n{\"status\":404}\n",
            "appends after other lines"
        );
    }

    #[test]
    fn durations_are_milliseconds_with_three_decimals() {
        let json = line(
            LogFormat::Json,
            &[
                (
                    LogField::Duration,
                    Value::Millis(Duration::from_micros(1_234_567)),
                ),
                (LogField::Upstream, Value::Millis(Duration::from_micros(5))),
            ],
        );
        assert_eq!(json, "{\"duration_ms\":1234.567,\"upstream_ms\":0.005}\n");
    }
}
