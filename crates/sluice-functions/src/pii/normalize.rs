//! Normalisation of emails, phones and dates of birth by Meta's and Google's rules (SPEC
//! section 4), one value at a time into a reused buffer.

use unicode_normalization::UnicodeNormalization;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Meta,
    Google,
}

impl Profile {
    pub fn parse(text: &str) -> Option<Profile> {
        match text.trim().to_ascii_lowercase().as_str() {
            "meta" | "facebook" => Some(Profile::Meta),
            "google" => Some(Profile::Google),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Email,
    Phone,
    FirstName,
    LastName,
    City,
    State,
    Zip,
    Country,
    Gender,
    Dob,
    ExternalId,
}

pub(super) const KINDS: &str =
    "email, phone, first_name, last_name, city, state, zip, country, gender, dob, external_id";

impl Kind {
    pub fn parse(text: &str) -> Option<Kind> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "email" => Kind::Email,
            "phone" => Kind::Phone,
            "first_name" | "fn" => Kind::FirstName,
            "last_name" | "ln" => Kind::LastName,
            "city" | "ct" => Kind::City,
            "state" | "st" => Kind::State,
            "zip" | "postal_code" => Kind::Zip,
            "country" => Kind::Country,
            "gender" | "ge" => Kind::Gender,
            "dob" | "date_of_birth" => Kind::Dob,
            "external_id" => Kind::ExternalId,
            _ => return None,
        })
    }
}

/// True for a 64-character hex string: an already hashed value.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lowercase and NFC `input` into `out` (ASCII is already NFC, so it skips the work).
fn lower_nfc(input: &str, out: &mut String) {
    out.clear();
    if input.is_ascii() {
        out.push_str(input);
        out.make_ascii_lowercase();
    } else {
        let lowered: String = input.chars().flat_map(char::to_lowercase).collect();
        out.extend(lowered.nfc());
    }
}

fn retain(out: &mut String, keep: impl Fn(char) -> bool) {
    out.retain(keep);
}

/// Normalise one value of a kind into `out`; false means the result is NULL.
pub fn normalize(
    kind: Kind,
    profile: Profile,
    calling_code: Option<&str>,
    input: &str,
    out: &mut String,
) -> bool {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return false;
    }
    match kind {
        Kind::ExternalId => {
            out.clear();
            out.push_str(trimmed);
            true
        }
        Kind::Email => normalize_email(trimmed, profile, out),
        Kind::Phone => normalize_phone(trimmed, profile, calling_code, out),
        Kind::FirstName | Kind::LastName => {
            lower_nfc(trimmed, out);
            if profile == Profile::Google {
                retain(out, |c| c.is_alphabetic() || c.is_whitespace());
                // Trim in place: digits or punctuation at the ends may have left spaces.
                out.truncate(out.trim_end().len());
                let lead = out.len() - out.trim_start().len();
                out.drain(..lead);
            }
            !out.is_empty()
        }
        Kind::City | Kind::State => {
            lower_nfc(trimmed, out);
            retain(out, char::is_alphabetic);
            !out.is_empty()
        }
        Kind::Zip => {
            lower_nfc(trimmed, out);
            if let Some(dash) = out.find('-') {
                out.truncate(dash);
            }
            retain(out, |c| !c.is_whitespace());
            !out.is_empty()
        }
        Kind::Country => {
            lower_nfc(trimmed, out);
            out.len() == 2 && out.bytes().all(|b| b.is_ascii_lowercase())
        }
        Kind::Gender => {
            lower_nfc(trimmed, out);
            let g = match out.as_str() {
                "f" | "female" => "f",
                "m" | "male" => "m",
                _ => return false,
            };
            out.clear();
            out.push_str(g);
            true
        }
        Kind::Dob => normalize_dob(trimmed, out),
    }
}

fn normalize_email(trimmed: &str, profile: Profile, out: &mut String) -> bool {
    lower_nfc(trimmed, out);
    if profile == Profile::Google {
        // Most addresses have none: look before rebuilding the string.
        if has_whitespace(out) {
            retain(out, |c| !c.is_whitespace());
        }
        if let Some(at) = out.rfind('@') {
            let domain = &out[at + 1..];
            if domain == "gmail.com" || domain == "googlemail.com" {
                let domain = domain.to_string();
                let local = &out[..at];
                let local = local.split('+').next().unwrap_or("");
                let local: String = local.chars().filter(|c| *c != '.').collect();
                out.clear();
                out.push_str(&local);
                out.push('@');
                out.push_str(&domain);
            }
        }
    }
    looks_like_email(out)
}

/// `local@domain.tld`: one `@`, no whitespace, a dotted domain with a letter TLD of 2+.
fn looks_like_email(s: &str) -> bool {
    if s.is_ascii() {
        looks_like_ascii_email(s.as_bytes())
    } else {
        looks_like_any_email(s)
    }
}

fn looks_like_any_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    if local.is_empty() || domain.contains('@') || has_whitespace(s) {
        return false;
    }
    let Some((_, tld)) = domain.rsplit_once('.') else {
        return false;
    };
    !domain.split('.').any(str::is_empty)
        && tld.chars().count() >= 2
        && tld.chars().all(char::is_alphabetic)
}

/// `looks_like_email` in one pass over the bytes, for ASCII text (nearly every address).
fn looks_like_ascii_email(s: &[u8]) -> bool {
    let mut at = None;
    let mut last_dot = None;
    for (i, &b) in s.iter().enumerate() {
        match b {
            b'@' if at.is_some() => return false,
            b'@' => at = Some(i),
            b'.' if at.is_some() => {
                // An empty label: `@.` or `..` in the domain.
                if last_dot.unwrap_or(at.unwrap_or(0)) + 1 == i {
                    return false;
                }
                last_dot = Some(i);
            }
            b'\t'..=b'\r' | b' ' => return false,
            _ => {}
        }
    }
    let (Some(at), Some(dot)) = (at, last_dot) else {
        return false;
    };
    let tld = &s[dot + 1..];
    at > 0 && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic)
}

fn has_whitespace(s: &str) -> bool {
    if s.is_ascii() {
        // The ASCII characters `char::is_whitespace` accepts: tab to carriage return, space.
        s.bytes().any(|b| matches!(b, b'\t'..=b'\r' | b' '))
    } else {
        s.chars().any(char::is_whitespace)
    }
}

fn normalize_phone(
    trimmed: &str,
    profile: Profile,
    calling_code: Option<&str>,
    out: &mut String,
) -> bool {
    out.clear();
    let mut international = trimmed.starts_with('+');
    out.extend(trimmed.chars().filter(char::is_ascii_digit));
    if !international && out.starts_with("00") {
        out.drain(..2);
        international = true;
    }
    if !international {
        if let Some(code) = calling_code.map(str::trim).filter(|c| !c.is_empty()) {
            let code: String = code.chars().filter(char::is_ascii_digit).collect();
            if out.starts_with('0') {
                out.remove(0);
            }
            out.insert_str(0, &code);
        }
    }
    if !(7..=15).contains(&out.len()) {
        return false;
    }
    if profile == Profile::Google {
        out.insert(0, '+');
    }
    true
}

fn normalize_dob(trimmed: &str, out: &mut String) -> bool {
    let digits: String;
    let date_part = trimmed.split(['T', ' ']).next().unwrap_or(trimmed);
    let (y, m, d) = if date_part.len() == 8 && date_part.bytes().all(|b| b.is_ascii_digit()) {
        (&date_part[0..4], &date_part[4..6], &date_part[6..8])
    } else {
        let parts: Vec<&str> = date_part.split(['-', '/', '.']).collect();
        if parts.len() != 3 || parts[0].len() != 4 {
            return false;
        }
        digits = format!("{:0>2}{:0>2}", parts[1], parts[2]);
        if digits.len() != 4 {
            return false;
        }
        (parts[0], &digits[0..2], &digits[2..4])
    };
    let (Ok(yy), Ok(mm), Ok(dd)) = (y.parse::<i32>(), m.parse::<u32>(), d.parse::<u32>()) else {
        return false;
    };
    if chrono::NaiveDate::from_ymd_opt(yy, mm, dd).is_none() {
        return false;
    }
    out.clear();
    out.push_str(&format!("{yy:04}{mm:02}{dd:02}"));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::sha256;

    fn norm(kind: Kind, profile: Profile, code: Option<&str>, v: &str) -> Option<String> {
        let mut out = String::new();
        normalize(kind, profile, code, v, &mut out).then_some(out)
    }

    fn meta(kind: Kind, v: &str) -> Option<String> {
        norm(kind, Profile::Meta, None, v)
    }

    fn google(kind: Kind, v: &str) -> Option<String> {
        norm(kind, Profile::Google, None, v)
    }

    #[test]
    fn the_ascii_email_check_agrees_with_the_general_one() {
        for s in [
            "a@b.co",
            "a@b.c",
            "a@b",
            "@b.co",
            "a@@b.co",
            "a@b@c.co",
            "a@.b.co",
            "a@b..co",
            "a@b.co.",
            "a@b.c0",
            "a.b@c.d.ef",
            "a b@c.co",
            "a@b.co\t",
            "a@b.co\x0b",
            "ab.co",
            "a@b.Co",
            "a+tag@sub.b.info",
            "",
        ] {
            assert_eq!(
                looks_like_ascii_email(s.as_bytes()),
                looks_like_any_email(s),
                "{s:?}"
            );
        }
    }

    /// Meta Conversions API, "Customer Information Parameters": email is trimmed and
    /// lowercased; its example John_Smith@gmail.com hashes to 62a14e44...
    #[test]
    fn meta_email() {
        assert_eq!(
            meta(Kind::Email, "  John_Smith@gmail.com ").as_deref(),
            Some("john_smith@gmail.com")
        );
        assert_eq!(
            hex::encode(sha256(b"john_smith@gmail.com")),
            "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
        );
        assert_eq!(meta(Kind::Email, "not an email"), None);
        assert_eq!(meta(Kind::Email, "a@b"), None);
        assert_eq!(meta(Kind::Email, "a@b.c"), None);
        assert_eq!(meta(Kind::Email, "a b@c.com"), None);
        // Meta keeps dots and +tags in gmail addresses.
        assert_eq!(
            meta(Kind::Email, "J.Doe+x@gmail.com").as_deref(),
            Some("j.doe+x@gmail.com")
        );
    }

    /// Google Data Manager / Customer Match formatting: remove whitespace; for gmail.com
    /// and googlemail.com remove dots and +suffixes in the local part.
    #[test]
    fn google_email() {
        assert_eq!(
            google(Kind::Email, " Jane.Doe+news@GoogleMail.com").as_deref(),
            Some("janedoe@googlemail.com")
        );
        assert_eq!(
            google(Kind::Email, "jane.doe+x@example.com").as_deref(),
            Some("jane.doe+x@example.com")
        );
        assert_eq!(
            google(Kind::Email, "jane doe@gmail.com").as_deref(),
            Some("janedoe@gmail.com")
        );
    }

    /// Phone rules of SPEC section 4: Meta takes digits with the country code, Google E.164.
    #[test]
    fn phones() {
        assert_eq!(
            meta(Kind::Phone, "+1 (616) 954-1234").as_deref(),
            Some("16169541234")
        );
        assert_eq!(
            google(Kind::Phone, "+1 (616) 954-1234").as_deref(),
            Some("+16169541234")
        );
        assert_eq!(
            norm(Kind::Phone, Profile::Meta, Some("82"), "010-1234-5678").as_deref(),
            Some("821012345678")
        );
        assert_eq!(
            norm(Kind::Phone, Profile::Google, Some("82"), "010-1234-5678").as_deref(),
            Some("+821012345678")
        );
        assert_eq!(
            meta(Kind::Phone, "0082 10 1234 5678").as_deref(),
            Some("821012345678")
        );
        assert_eq!(
            norm(Kind::Phone, Profile::Meta, Some("82"), "+82 10 1234 5678").as_deref(),
            Some("821012345678")
        );
        assert_eq!(meta(Kind::Phone, "12345"), None);
        assert_eq!(meta(Kind::Phone, "1234567890123456"), None);
        assert_eq!(meta(Kind::Phone, "call me"), None);
    }

    #[test]
    fn names_and_places() {
        assert_eq!(
            meta(Kind::FirstName, "  Mary-Jane ").as_deref(),
            Some("mary-jane")
        );
        assert_eq!(
            google(Kind::FirstName, " Mary-Jane2 ").as_deref(),
            Some("maryjane")
        );
        assert_eq!(
            meta(Kind::City, "Washington D.C").as_deref(),
            Some("washingtondc")
        );
        assert_eq!(meta(Kind::State, "C.A.").as_deref(), Some("ca"));
        assert_eq!(meta(Kind::Zip, "98121-4892").as_deref(), Some("98121"));
        assert_eq!(meta(Kind::Zip, "NR9 5AL").as_deref(), Some("nr95al"));
        assert_eq!(meta(Kind::Country, " US ").as_deref(), Some("us"));
        assert_eq!(meta(Kind::Country, "USA"), None);
        assert_eq!(meta(Kind::Gender, "Female").as_deref(), Some("f"));
        assert_eq!(meta(Kind::Gender, "M").as_deref(), Some("m"));
        assert_eq!(meta(Kind::Gender, "x"), None);
        assert_eq!(meta(Kind::Dob, "1990-01-31").as_deref(), Some("19900131"));
        assert_eq!(meta(Kind::Dob, "1990/1/2").as_deref(), Some("19900102"));
        assert_eq!(meta(Kind::Dob, "19900131").as_deref(), Some("19900131"));
        assert_eq!(meta(Kind::Dob, "1990-02-30"), None);
        assert_eq!(meta(Kind::ExternalId, "  AbC-1 ").as_deref(), Some("AbC-1"));
        assert_eq!(meta(Kind::Email, "   "), None);
    }

    #[test]
    fn unicode_is_nfc() {
        // "É" as E + combining acute becomes the single code point é.
        assert_eq!(
            meta(Kind::FirstName, "E\u{301}lodie").as_deref(),
            Some("\u{e9}lodie")
        );
        assert_eq!(
            meta(Kind::FirstName, "\u{c9}lodie").as_deref(),
            Some("\u{e9}lodie")
        );
    }
}
