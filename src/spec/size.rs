//! Byte sizes as systemd writes them: a number, or a number with K, M, G or T (base 1024).

use serde::{Deserialize, Serialize};

use super::SpecError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    pub fn bytes(&self) -> Result<u64, SpecError> {
        match self {
            Self::Bytes(b) => Ok(*b),
            Self::Text(t) => parse_bytes(t),
        }
    }
}

pub fn parse_bytes(text: &str) -> Result<u64, SpecError> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'K')) => (&t[..i], 10),
        Some((i, 'M')) => (&t[..i], 20),
        Some((i, 'G')) => (&t[..i], 30),
        Some((i, 'T')) => (&t[..i], 40),
        Some((i, 'B')) => (&t[..i], 0),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| SpecError::Size(text.to_owned()))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| SpecError::SizeTooLarge(text.to_owned()))
}
