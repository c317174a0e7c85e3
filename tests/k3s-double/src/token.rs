//! k3s join tokens: `K10<CA hash>::<user>:<password>` in full, or just the
//! password. The double has no CA: its "hash" is random hex, kept with the
//! token in `<data-dir>/server/token` so it is stable across restarts.

use std::io::{self, Read};

/// `n` random bytes from /dev/urandom, as hex.
pub fn random_hex(n: usize) -> io::Result<String> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The full server token for a configured one (or a new random one).
pub fn full_token(configured: Option<&str>) -> io::Result<String> {
    match configured {
        Some(t) if is_full(t) => Ok(t.to_owned()),
        Some(password) => Ok(format!("K10{}::server:{password}", random_hex(32)?)),
        None => Ok(format!(
            "K10{}::server:{}",
            random_hex(32)?,
            random_hex(16)?
        )),
    }
}

fn is_full(token: &str) -> bool {
    token.starts_with("K10") && token.contains("::")
}

/// The CA hash of a full token.
fn hash(token: &str) -> Option<&str> {
    token.strip_prefix("K10")?.split_once("::").map(|(h, _)| h)
}

/// The password part of a token (the whole token when it is not full).
pub fn password(token: &str) -> &str {
    match token.split_once("::") {
        Some((_, cred)) => cred.split_once(':').map_or(cred, |(_, p)| p),
        None => token,
    }
}

/// Whether an agent presenting `presented` may join a server whose token is
/// `server`: the same token, or the same password (and, when both are full
/// tokens, the same CA hash, as k3s checks).
pub fn matches(server: &str, presented: &str) -> bool {
    if presented == server {
        return true;
    }
    if let (Some(a), Some(b)) = (hash(server), hash(presented)) {
        if a != b {
            return false;
        }
    }
    !presented.is_empty() && password(presented) == password(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_tokens_have_k3s_shape() {
        let t = full_token(Some("s3cret")).unwrap();
        let hex = t
            .strip_prefix("K10")
            .unwrap()
            .strip_suffix("::server:s3cret")
            .unwrap();
        assert_eq!(hex.len(), 64);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            full_token(Some("K10ab::server:x")).unwrap(),
            "K10ab::server:x"
        );
        let random = full_token(None).unwrap();
        assert_eq!(password(&random).len(), 32);
        assert_ne!(random, full_token(None).unwrap());
    }

    #[test]
    fn comparison() {
        let server = "K10aaaa::server:s3cret";
        assert!(matches(server, server));
        assert!(matches(server, "s3cret"));
        assert!(matches(server, "K10aaaa::node:s3cret"));
        assert!(!matches(server, "K10bbbb::server:s3cret"), "another CA");
        assert!(!matches(server, "wrong"));
        assert!(!matches(server, "K10aaaa::server:wrong"));
        assert!(!matches(server, ""));
        assert!(matches("plain", "plain"));
    }
}
