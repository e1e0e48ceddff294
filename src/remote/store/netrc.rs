//! The login for a host from a netrc file (`NETRC`, else `~/.netrc`), as curl and ftp read it:
//! `machine NAME login USER password SECRET`, a `default` entry for any other host, `macdef`
//! blocks skipped.

use std::path::PathBuf;

/// A user and password for one host.
#[derive(Debug, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: String,
}

/// The login for `host` (for `user`, when the URL names one), if the netrc file has one.
pub fn login(host: &str, user: Option<&str>) -> Option<Login> {
    let file = std::env::var_os("NETRC")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".netrc")))?;
    let text = std::fs::read_to_string(file).ok()?;
    find(&text, host, user)
}

/// The first entry of `text` for `host` (else the `default` one) whose login is `user`, when
/// given, and that has a password.
pub fn find(text: &str, host: &str, user: Option<&str>) -> Option<Login> {
    let mut entries: Vec<(Option<String>, Option<String>, Option<String>)> = Vec::new();
    let mut lines = text.lines();
    let mut words: Vec<&str> = Vec::new();
    // A macro definition runs to the next empty line: none of it is an entry.
    while let Some(line) = lines.next() {
        for word in line.split_whitespace() {
            if word == "macdef" {
                for line in lines.by_ref() {
                    if line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            words.push(word);
        }
    }
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        match word {
            "machine" => entries.push((words.next().map(str::to_string), None, None)),
            "default" => entries.push((None, None, None)),
            "login" | "password" | "account" => {
                let value = words.next().map(str::to_string);
                if let Some(entry) = entries.last_mut() {
                    match word {
                        "login" => entry.1 = value,
                        "password" => entry.2 = value,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let fits = |entry: &&(Option<String>, Option<String>, Option<String>)| {
        entry.2.is_some() && user.is_none_or(|u| entry.1.as_deref() == Some(u))
    };
    let named = entries
        .iter()
        .filter(|e| e.0.as_deref() == Some(host))
        .find(fits);
    let chosen = named.or_else(|| entries.iter().filter(|e| e.0.is_none()).find(fits))?;
    Some(Login {
        user: chosen
            .1
            .clone()
            .or(user.map(str::to_string))
            .unwrap_or_default(),
        password: chosen.2.clone()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_of_the_host_and_user_is_found_else_the_default() {
        let text = "machine dav.example login ann password one\n\
                    macdef init\nmachine dav.example login eve password evil\n\n\
                    machine dav.example\n  login bob\n  password two\n\
                    default login anon password guest\n";
        let login = |host, user| find(text, host, user).map(|l| (l.user, l.password));
        let pair = |u: &str, p: &str| Some((u.to_string(), p.to_string()));
        assert_eq!(login("dav.example", None), pair("ann", "one"));
        assert_eq!(login("dav.example", Some("bob")), pair("bob", "two"));
        assert_eq!(login("dav.example", Some("eve")), None);
        assert_eq!(login("other", None), pair("anon", "guest"));
        assert_eq!(find("machine h login x\n", "h", None), None);
    }
}
