//! k3s join tokens: `K10<CA hash>::<user>:<password>` in full, or just the
//! password (a "short" token). A full token lets a node check the server's
//! CA before it presents the token; a short one skips that check, as in
//! k3s.

use std::io::{self, Read};

/// `n` random bytes from /dev/urandom.
pub fn random_bytes(n: usize) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> io::Result<String> {
    Ok(random_bytes(n)?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The CA hash of a full token (`None` for a short one).
pub fn ca_hash(token: &str) -> Option<&str> {
    token.strip_prefix("K10")?.split_once("::").map(|(h, _)| h)
}

/// The password part of a token (the whole token when it is short).
pub fn password(token: &str) -> &str {
    match token.split_once("::") {
        Some((_, cred)) => cred.split_once(':').map_or(cred, |(_, p)| p),
        None => token,
    }
}

/// The server's full token for the CA with `hash`: the configured token's
/// password, or a new random one. A configured full token must name this
/// CA, as k3s insists.
pub fn server_token(configured: Option<&str>, hash: &str) -> Result<String, String> {
    let password = match configured {
        Some(t) => {
            if let Some(h) = ca_hash(t) {
                if h != hash {
                    return Err(format!(
                        "the configured token names CA hash {h}, but this server's CA hashes to {hash}"
                    ));
                }
            }
            password(t).to_owned()
        }
        None => random_hex(16).map_err(|e| format!("reading /dev/urandom: {e}"))?,
    };
    Ok(format!("K10{hash}::server:{password}"))
}

/// Whether a node presenting `presented` may join a server whose token is
/// `server`: the same password (and, when both are full tokens, the same
/// CA hash, as k3s checks).
pub fn matches(server: &str, presented: &str) -> bool {
    if let (Some(a), Some(b)) = (ca_hash(server), ca_hash(presented)) {
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
    fn server_tokens_have_k3s_shape() {
        let hash = "ab".repeat(32);
        let t = server_token(Some("s3cret"), &hash).unwrap();
        assert_eq!(t, format!("K10{hash}::server:s3cret"));
        let full = format!("K10{hash}::server:x");
        assert_eq!(server_token(Some(&full), &hash).unwrap(), full);
        let other = server_token(Some("K10cd::server:x"), &hash).unwrap_err();
        assert!(other.contains("CA hash cd"), "{other}");
        let random = server_token(None, &hash).unwrap();
        assert_eq!(password(&random).len(), 32);
        assert_ne!(random, server_token(None, &hash).unwrap());
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
        assert_eq!(ca_hash(server), Some("aaaa"));
        assert_eq!(ca_hash("s3cret"), None);
    }
}
