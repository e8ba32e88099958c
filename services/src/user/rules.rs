//! What a username and a password must look like. Messages name the rule broken.

pub const USERNAME_RULE: &str = "username must be 3 to 32 characters of lowercase letters, digits, '_', '-' or '.', starting with a letter";

/// The longest username the rule allows, in bytes as in characters: every character it
/// allows is ASCII.
pub const USERNAME_MAX_LEN: usize = 32;

pub fn validate_username(username: &str) -> Result<(), String> {
    // Before any scan, and without echoing it: a name of 17 KB costs nothing to refuse.
    if username.len() > USERNAME_MAX_LEN {
        return Err(format!("{USERNAME_RULE}; got {} bytes", username.len()));
    }
    let length_ok = (3..=32).contains(&username.chars().count());
    let starts_with_letter = username
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase());
    let charset_ok = username
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if length_ok && starts_with_letter && charset_ok {
        Ok(())
    } else {
        Err(format!(
            "{USERNAME_RULE}; got {}",
            crate::text::quote(username)
        ))
    }
}

pub fn validate_password(password: &str, min_len: usize) -> Result<(), String> {
    let length = password.chars().count();
    if length < min_len {
        return Err(format!(
            "password must be at least {min_len} characters; got {length}"
        ));
    }
    if length > 1024 {
        return Err("password must be at most 1024 characters".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_rule() {
        for good in [
            "bob",
            "alice_1",
            "a.b-c",
            "x23456789012345678901234567890yz",
        ] {
            assert!(validate_username(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "ab",
            "1bob",
            "Bob",
            "bo b",
            "bob/x",
            "_bob",
            &"a".repeat(33),
        ] {
            let message = validate_username(bad).unwrap_err();
            assert!(message.contains("3 to 32 characters"), "{message}");
        }
    }

    #[test]
    fn an_overlong_username_is_refused_with_a_short_message_that_names_the_rule() {
        let message = validate_username(&"a".repeat(20_000)).unwrap_err();
        assert!(message.len() < 300, "{} bytes", message.len());
        assert!(message.contains("3 to 32 characters"), "{message}");
        assert!(message.contains("20000 bytes"), "{message}");
    }

    #[test]
    fn passwords_have_a_minimum_length() {
        assert!(validate_password("12345678", 8).is_ok());
        assert!(
            validate_password("1234567", 8)
                .unwrap_err()
                .contains("at least 8")
        );
    }
}
