//! `application/x-www-form-urlencoded` encoding and decoding (WHATWG URL
//! standard §5), for the two LWA token requests and the sandbox.

/// Appends `key=value` pairs, percent-encoding everything but
/// `A-Z a-z 0-9 * - . _` and writing space as `+`.
pub(crate) fn encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        push_encoded(&mut out, k);
        out.push('=');
        push_encoded(&mut out, v);
    }
    out
}

fn push_encoded(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
    }
}

/// Decodes a form body into pairs (invalid UTF-8 is replaced, bad escapes are
/// kept literally).
pub(crate) fn decode(body: &[u8]) -> Vec<(String, String)> {
    body.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = match p.iter().position(|&b| b == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &[][..]),
            };
            (decode_component(k), decode_component(v))
        })
        .collect()
}

fn decode_component(s: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let pairs = [
            ("grant_type", "refresh_token"),
            ("refresh_token", "Atzr|IwEB+/=& x%"),
            ("client_id", "amzn1.application-oa2-client.abc"),
        ];
        let enc = encode(&pairs);
        assert_eq!(
            enc,
            "grant_type=refresh_token&refresh_token=Atzr%7CIwEB%2B%2F%3D%26+x%25&client_id=amzn1.application-oa2-client.abc"
        );
        let dec = decode(enc.as_bytes());
        assert_eq!(dec.len(), 3);
        for ((k, v), (dk, dv)) in pairs.iter().zip(&dec) {
            assert_eq!((*k, *v), (dk.as_str(), dv.as_str()));
        }
        assert_eq!(decode(b"a=%zz&b=%4")[0].1, "%zz");
        assert_eq!(decode(b"a=%zz&b=%4")[1].1, "%4");
    }
}
