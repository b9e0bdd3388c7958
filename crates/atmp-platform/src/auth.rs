//! Passwords (argon2) and random tokens.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The argon2id hash (PHC string, with its own salt) of a password.
pub fn hash_password(password: &str) -> String {
    Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2 with default parameters")
        .to_string()
}

/// Whether `password` matches the stored `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// A random token, URL-safe.
pub fn token(bytes: usize) -> String {
    use base64::Engine;
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Random bytes as hex (for file names).
pub fn hex_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// A password users can type: 16 letters and digits, without look-alikes.
pub fn password() -> String {
    const A: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| A[*x as usize % A.len()] as char).collect()
}

/// What is stored of a session token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The checks a new password must pass, as a French message.
pub fn password_problem(p: &str) -> Option<&'static str> {
    if p.chars().count() < 12 {
        Some("le mot de passe doit compter au moins 12 caractères")
    } else if p.len() > 256 {
        Some("le mot de passe est trop long (256 caractères au plus)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hash_and_verify() {
        let h = super::hash_password("correct horse battery");
        assert!(h.starts_with("$argon2id$"));
        assert!(super::verify_password("correct horse battery", &h));
        assert!(!super::verify_password("correct horse batterY", &h));
        assert_ne!(h, super::hash_password("correct horse battery"), "salted");
    }
}
