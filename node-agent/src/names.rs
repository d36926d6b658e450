//! Container names: validation and Docker-style generated names (`brave_turing`).

use rand::seq::IndexedRandom;

const LEFT: &[&str] = &[
    "admiring",
    "bold",
    "brave",
    "busy",
    "calm",
    "clever",
    "cool",
    "crisp",
    "dazzling",
    "eager",
    "elastic",
    "epic",
    "fervent",
    "festive",
    "focused",
    "gallant",
    "gifted",
    "happy",
    "hopeful",
    "jolly",
    "keen",
    "kind",
    "loving",
    "lucid",
    "modest",
    "nifty",
    "nimble",
    "noble",
    "optimistic",
    "peaceful",
    "quirky",
    "relaxed",
    "serene",
    "sharp",
    "stoic",
    "sweet",
    "tender",
    "trusting",
    "upbeat",
    "vibrant",
    "wizardly",
    "zealous",
];

const RIGHT: &[&str] = &[
    "babbage", "bell", "bohr", "curie", "darwin", "dijkstra", "einstein", "euler", "fermat",
    "feynman", "galileo", "gauss", "hopper", "hypatia", "kepler", "knuth", "lamport", "liskov",
    "lovelace", "maxwell", "meitner", "newton", "noether", "pascal", "pike", "ritchie", "shannon",
    "thompson", "torvalds", "turing", "wing", "wozniak",
];

/// A random `adjective_surname`.
pub fn generate() -> String {
    let mut rng = rand::rng();
    format!(
        "{}_{}",
        LEFT.choose(&mut rng).copied().unwrap_or("busy"),
        RIGHT.choose(&mut rng).copied().unwrap_or("turing")
    )
}

/// Docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let ok = b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate(&generate()).is_ok());
        assert!(validate("web-1").is_ok());
        assert!(validate("-bad").is_err());
        assert!(validate("a").is_err());
        assert!(validate("has space").is_err());
        assert!(validate("../x").is_err());
    }
}
