//! Validation of the key/value lists berth hands to plugins: the configuration given to
//! `plugin.configure` and the per-object options (`volume create -o`, `network create -o`,
//! `--log-opt`).
//!
//! The WIT contract is the same for all of them: keys are unique and in the order the user gave
//! them, and an unknown key is `invalid-argument` naming the key, so that a typo fails loudly
//! instead of being ignored.

use crate::Error;

/// Checks that every key of `pairs` is one of `allowed` and that no key repeats.
///
/// `what` names the list in the error message, for example `"option"` or
/// `"configuration key"`. The error is `invalid-argument` and names the first offending key
/// and the accepted ones.
pub fn check_keys(pairs: &[(String, String)], allowed: &[&str], what: &str) -> Result<(), Error> {
    for (i, (key, _)) in pairs.iter().enumerate() {
        if !allowed.contains(&key.as_str()) {
            let accepted = if allowed.is_empty() {
                "none are accepted".to_owned()
            } else {
                format!("accepted: {}", allowed.join(", "))
            };
            return Err(Error::invalid_argument(format!(
                "unknown {what} {key:?} ({accepted})"
            )));
        }
        // The host promises unique keys; a repeat means that promise broke, and silently
        // picking one value would hide it.
        if pairs[..i].iter().any(|(k, _)| k == key) {
            return Err(Error::invalid_argument(format!(
                "{what} {key:?} given twice"
            )));
        }
    }
    Ok(())
}

/// The value of `key` in `pairs`, if present.
pub fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn pairs(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn accepts_known_keys() {
        let p = pairs(&[("size", "1G"), ("mode", "0755")]);
        check_keys(&p, &["mode", "size"], "option").unwrap();
        assert_eq!(get(&p, "mode"), Some("0755"));
        assert_eq!(get(&p, "uid"), None);
        check_keys(&[], &[], "option").unwrap();
    }

    #[test]
    fn rejects_unknown_keys_naming_them() {
        let err = check_keys(&pairs(&[("sise", "1G")]), &["size"], "option").unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert_eq!(err.message, r#"unknown option "sise" (accepted: size)"#);
        let err = check_keys(&pairs(&[("x", "")]), &[], "configuration key").unwrap_err();
        assert_eq!(
            err.message,
            r#"unknown configuration key "x" (none are accepted)"#
        );
    }

    #[test]
    fn rejects_repeated_keys() {
        let err = check_keys(&pairs(&[("a", "1"), ("a", "2")]), &["a"], "option").unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains("given twice"));
    }
}
