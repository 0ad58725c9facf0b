//! An admin's message to an agent (`hivectl tell`): what text may be passed on. Checked by
//! hivectl before it calls and by the daemon before it tells.

/// Longest message `hivectl tell` passes on: it reaches the agent's turn on stdin and in
/// an environment variable, and waits in a bounded queue.
pub const MAX_TELL: usize = 4 * 1024;

/// What an admin may tell an agent: text of at most [`MAX_TELL`] bytes; newlines and tabs
/// are fine, other control characters and invisible format characters are not (the
/// agent's AI reads it as an instruction, and it must read what the admin saw).
pub fn check_message(message: &str) -> Result<(), String> {
    if message.trim().is_empty() {
        return Err("the message is empty".into());
    }
    if message.len() > MAX_TELL {
        return Err(format!(
            "a message of {} bytes, at most {MAX_TELL}",
            message.len()
        ));
    }
    for line in message.split(['\n', '\t']) {
        super::request::check_text(line)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_text_an_admin_can_read() {
        assert!(check_message("please look at /srv/docs\n\tthanks").is_ok());
        assert!(check_message("  ").is_err());
        assert!(check_message(&"x".repeat(MAX_TELL + 1)).is_err());
        assert!(check_message("hidden\u{202E}txt").is_err());
        assert!(check_message("bell\u{7}").is_err());
    }
}
