//! The cluster CA of the TEST DOUBLE: a PEM-looking blob of random bytes,
//! not a certificate (the double speaks no TLS). What matters is what k3s's
//! join relies on: a server serves its CA bytes, and a full join token
//! carries `sha256(those bytes)`, so a node can tell it reached the right
//! cluster before it presents the token. Kept in k3s's own place,
//! `<data-dir>/server/tls/server-ca.crt`, so it survives restarts; a
//! joining server adopts the CA of the cluster it joins.

use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::token::random_bytes;

/// Where k3s keeps its server CA, under the data dir.
pub const CA_FILE: &str = "server/tls/server-ca.crt";

/// `<data-dir>/server/tls/server-ca.crt`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(CA_FILE)
}

/// A new CA blob.
pub fn generate() -> io::Result<Vec<u8>> {
    let body = base64::engine::general_purpose::STANDARD.encode(random_bytes(48)?);
    Ok(format!(
        "# k3s-double TEST DOUBLE cluster CA: random bytes, not a certificate.\n\
         -----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"
    )
    .into_bytes())
}

/// The CA kept from an earlier start, else a new one (saved 0600).
pub fn load_or_create(data_dir: &Path) -> Result<Vec<u8>, String> {
    let p = path(data_dir);
    match std::fs::read(&p) {
        Ok(ca) if !ca.is_empty() => Ok(ca),
        _ => {
            let ca = generate().map_err(|e| format!("reading /dev/urandom: {e}"))?;
            store(data_dir, &ca)?;
            Ok(ca)
        }
    }
}

/// Saves `ca` as this server's CA.
pub fn store(data_dir: &Path, ca: &[u8]) -> Result<(), String> {
    let p = path(data_dir);
    crate::write_file(&p, ca, 0o600).map_err(|e| format!("writing {}: {e}", p.display()))
}

/// The hash a full token carries: sha256 of the CA bytes, lowercase hex.
pub fn hash(ca: &[u8]) -> String {
    Sha256::digest(ca)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_like_pem_and_hashes_its_bytes() {
        let ca = generate().unwrap();
        let text = String::from_utf8(ca.clone()).unwrap();
        assert!(text.contains("TEST DOUBLE"));
        assert!(text.contains("-----BEGIN CERTIFICATE-----\n"));
        assert_ne!(ca, generate().unwrap());
        assert_eq!(
            hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hash(&ca).len(), 64);
    }
}
