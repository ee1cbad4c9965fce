//! Secrets kept out of config.toml and out of debug output: a `[[users]]` password may come
//! from a file (`password_file`, `server_password_file`: its first line) or an environment
//! variable (`password_env`, `server_password_env`); the loader reads them into `password`
//! and `server_password` before validation. [`hidden`] is how every `Debug` that holds a
//! secret prints it.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, Problem, UserConfig};

/// What `Debug` prints in place of a secret: `Some("<hidden>")` when one is set.
pub fn hidden(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "<hidden>")
}

/// One secret's three possible sources.
struct Sources<'a> {
    name: &'static str,
    inline: &'a Option<String>,
    file: &'a Option<PathBuf>,
    env: &'a Option<String>,
}

impl Config {
    /// Reads every user's `*_file` and `*_env` password into `password` / `server_password`.
    /// A file that cannot be read is an [`ConfigError::Io`]; two sources for one secret, an
    /// unset variable or an empty secret are [`ConfigError::Invalid`], all listed.
    pub(super) fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        for (i, user) in self.users.iter_mut().enumerate() {
            let UserConfig {
                password,
                password_file,
                password_env,
                server_password,
                server_password_file,
                server_password_env,
                ..
            } = user;
            let client = Sources {
                name: "password",
                inline: password,
                file: password_file,
                env: password_env,
            };
            if let Some(secret) = client.read(i, &mut problems)? {
                *password = Some(secret);
            }
            let server = Sources {
                name: "server_password",
                inline: server_password,
                file: server_password_file,
                env: server_password_env,
            };
            if let Some(secret) = server.read(i, &mut problems)? {
                *server_password = Some(secret);
            }
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(ConfigError::Invalid(problems)),
        }
    }
}

impl Sources<'_> {
    /// The secret from the file or the variable, if one of them is set.
    fn read(
        &self,
        user: usize,
        problems: &mut Vec<Problem>,
    ) -> Result<Option<String>, ConfigError> {
        let key = |suffix: &str| format!("users[{user}].{}{suffix}", self.name);
        let mut problem = |suffix: &str, message: String| {
            problems.push(Problem {
                key: key(suffix),
                message,
            })
        };
        let set = [
            self.inline.is_some(),
            self.file.is_some(),
            self.env.is_some(),
        ];
        if set.iter().filter(|s| **s).count() > 1 {
            let name = self.name;
            problem(
                "",
                format!("set only one of {name}, {name}_file and {name}_env"),
            );
            return Ok(None);
        }
        let secret = match (self.file, self.env) {
            (Some(path), _) => first_line(path)?,
            (_, Some(var)) => match std::env::var(var) {
                Ok(value) => value,
                Err(e) => {
                    problem("_env", format!("environment variable {var:?}: {e}"));
                    return Ok(None);
                }
            },
            (None, None) => return Ok(None),
        };
        if secret.is_empty() {
            let suffix = if self.file.is_some() { "_file" } else { "_env" };
            problem(suffix, "the secret is empty".into());
            return Ok(None);
        }
        Ok(Some(secret))
    }
}

/// The first line of a file, without its line ending.
fn first_line(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str =
        "[proxy]\nadmin_users = []\n[[nodes]]\nname = \"p\"\nhost = \"h\"\nrole = \"primary\"\n\
                         [[databases]]\nname = \"app\"\n";

    fn config(users: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(&format!("{NODES}{users}"))
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("pgsplit-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn passwords_from_a_file_and_the_environment() {
        let client = temp_file("client", "from file\r\nsecond line\n");
        let server = temp_file("server", "server secret");
        std::env::set_var("PGSPLIT_TEST_PASSWORD_7", "from env");
        let c = config(&format!(
            "[[users]]\nname = \"a\"\npassword_file = {client:?}\nserver_password_file = {server:?}\n\
             [[users]]\nname = \"b\"\npassword_env = \"PGSPLIT_TEST_PASSWORD_7\"\n"
        ))
        .unwrap();
        assert_eq!(c.users[0].password.as_deref(), Some("from file"));
        assert_eq!(c.users[0].server_password(), Some("server secret"));
        assert_eq!(c.users[1].password.as_deref(), Some("from env"));
        assert_eq!(c.users[1].server_password(), Some("from env"));
        let _ = std::fs::remove_file(client);
        let _ = std::fs::remove_file(server);
    }

    #[test]
    fn two_sources_an_unset_variable_or_a_missing_file_are_errors() {
        let path = temp_file("both", "x");
        let e = config(&format!(
            "[[users]]\nname = \"a\"\npassword = \"p\"\npassword_file = {path:?}\n\
             [[users]]\nname = \"b\"\npassword_env = \"PGSPLIT_TEST_UNSET_7\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(
                "users[0].password: set only one of password, password_file and password_env"
            ),
            "{e}"
        );
        assert!(
            e.contains("users[1].password_env: environment variable \"PGSPLIT_TEST_UNSET_7\""),
            "{e}"
        );
        let e = config("[[users]]\nname = \"a\"\npassword_file = \"/nonexistent/pgsplit\"\n")
            .unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }), "{e}");
        let _ = std::fs::remove_file(path);
    }
}
