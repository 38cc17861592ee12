//! A bench's command line, flag by flag: values and numbers with errors
//! that name the flag and show the usage.

use std::fmt::Display;
use std::str::FromStr;

use anyhow::Context as _;

/// The arguments after the program name.
pub struct Argv {
    args: Vec<String>,
    next: usize,
    usage: &'static str,
}

impl Argv {
    /// This process's arguments.
    pub fn from_env(usage: &'static str) -> Argv {
        Argv::new(std::env::args().skip(1).collect(), usage)
    }

    pub fn new(args: Vec<String>, usage: &'static str) -> Argv {
        Argv {
            args,
            next: 0,
            usage,
        }
    }

    /// Whether `flag` is anywhere on the line (for flags such as `--quick`
    /// that set the defaults of others).
    pub fn contains(&self, flag: &str) -> bool {
        self.args.iter().any(|a| a == flag)
    }

    /// The next flag.
    pub fn next_flag(&mut self) -> Option<String> {
        let a = self.args.get(self.next).cloned();
        self.next += 1;
        a
    }

    /// The value of `flag`: the next argument.
    pub fn value(&mut self, flag: &str) -> anyhow::Result<String> {
        self.next_flag()
            .with_context(|| format!("{flag} needs a value\n{}", self.usage))
    }

    /// The value of `flag` as a number (`_` allowed as a separator).
    pub fn num<T>(&mut self, flag: &str) -> anyhow::Result<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        let v = self.value(flag)?;
        parse_num(&v).with_context(|| flag.to_string())
    }
}

/// `s` as a number (`1_000` is 1000).
pub fn parse_num<T>(s: &str) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: Display,
{
    s.replace('_', "")
        .parse()
        .map_err(|e| anyhow::anyhow!("{s:?} is not a number ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_values_and_numbers() {
        let mut a = Argv::new(
            [
                "--quick", "--n", "1_000", "--name", "x", "--bad", "1k", "--last",
            ]
            .map(String::from)
            .to_vec(),
            "usage: test",
        );
        assert!(a.contains("--quick"));
        assert_eq!(a.next_flag().as_deref(), Some("--quick"));
        assert_eq!(a.next_flag().as_deref(), Some("--n"));
        assert_eq!(a.num::<u64>("--n").expect("a number"), 1000);
        assert_eq!(a.next_flag().as_deref(), Some("--name"));
        assert_eq!(a.value("--name").expect("a value"), "x");
        assert_eq!(a.next_flag().as_deref(), Some("--bad"));
        let e = format!("{:#}", a.num::<u64>("--bad").expect_err("not a number"));
        assert!(e.contains("--bad") && e.contains("\"1k\""), "{e}");
        assert_eq!(a.next_flag().as_deref(), Some("--last"));
        let e = format!("{:#}", a.value("--last").expect_err("no value"));
        assert!(
            e.contains("--last needs a value") && e.contains("usage: test"),
            "{e}"
        );
        assert_eq!(a.next_flag(), None);
    }
}
