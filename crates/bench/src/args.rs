//! The one command-line parser of every benchmark binary: `--flag value` options,
//! `--switch` options without a value, positional words, and `--help`.

use std::collections::HashMap;
use std::str::FromStr;

/// One option a program takes.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    /// The flag, with its dashes (`--clients`).
    pub flag: &'static str,
    /// The value's placeholder (`N`), or `None` for a switch.
    pub value: Option<&'static str>,
    /// One line of help.
    pub help: &'static str,
}

/// An option that takes a value.
pub const fn value(flag: &'static str, placeholder: &'static str, help: &'static str) -> Opt {
    Opt {
        flag,
        value: Some(placeholder),
        help,
    }
}

/// An option without a value.
pub const fn switch(flag: &'static str, help: &'static str) -> Opt {
    Opt {
        flag,
        value: None,
        help,
    }
}

/// What a program's command line said.
#[derive(Debug, Default)]
pub struct Args {
    values: HashMap<&'static str, String>,
    switches: Vec<&'static str>,
    /// Words that are not options, in order.
    pub positional: Vec<String>,
}

/// The outcome of parsing: the arguments, or the text to print and the exit code
/// (`--help`: the usage on stdout, 0; a mistake: the mistake and the usage, 2).
#[derive(Debug)]
pub enum Parsed {
    /// Run with these.
    Run(Args),
    /// Print this and exit with this code.
    Exit(String, i32),
}

/// The usage text: `synopsis`, then one line per option.
pub fn usage(synopsis: &str, options: &[Opt]) -> String {
    let mut text = format!("usage: {synopsis}\n\noptions:\n");
    for opt in options {
        let left = match opt.value {
            Some(placeholder) => format!("{} {placeholder}", opt.flag),
            None => opt.flag.to_owned(),
        };
        text.push_str(&format!("  {left:<24} {}\n", opt.help));
    }
    text.push_str(&format!("  {:<24} {}\n", "--help", "print this and exit"));
    text
}

/// Parses `words` (the command line without the program name) against `options`.
pub fn parse_from(
    words: impl IntoIterator<Item = String>,
    synopsis: &str,
    options: &[Opt],
) -> Parsed {
    let mut args = Args::default();
    let mut words = words.into_iter();
    let fail = |why: String| Parsed::Exit(format!("{why}\n\n{}", usage(synopsis, options)), 2);
    while let Some(word) = words.next() {
        if word == "--help" || word == "-h" {
            return Parsed::Exit(usage(synopsis, options), 0);
        }
        if !word.starts_with("--") {
            args.positional.push(word);
            continue;
        }
        let Some(opt) = options.iter().find(|opt| opt.flag == word) else {
            return fail(format!("unknown option {word}"));
        };
        match opt.value {
            None => args.switches.push(opt.flag),
            Some(placeholder) => match words.next() {
                Some(value) => {
                    args.values.insert(opt.flag, value);
                }
                None => return fail(format!("{word} needs a value ({placeholder})")),
            },
        }
    }
    Parsed::Run(args)
}

/// Parses the process's command line; on `--help` or a mistake prints and exits.
pub fn parse(synopsis: &str, options: &[Opt]) -> Args {
    match parse_from(std::env::args().skip(1), synopsis, options) {
        Parsed::Run(args) => args,
        Parsed::Exit(text, 0) => {
            print!("{text}");
            std::process::exit(0);
        }
        Parsed::Exit(text, code) => {
            eprint!("{text}");
            std::process::exit(code);
        }
    }
}

impl Args {
    /// The value given for `flag`, as text.
    pub fn text(&self, flag: &str) -> Option<&str> {
        self.values.get(flag).map(String::as_str)
    }

    /// Whether the switch `flag` was given.
    pub fn has(&self, flag: &str) -> bool {
        self.switches.contains(&flag)
    }

    /// The value given for `flag`, parsed.
    ///
    /// # Errors
    /// A message naming the flag and the value when it does not parse.
    pub fn get<T: FromStr>(&self, flag: &str) -> Result<Option<T>, String> {
        self.text(flag)
            .map(|text| {
                text.parse()
                    .map_err(|_| format!("{flag}: {text:?} is not a valid value"))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[Opt] = &[
        value("--clients", "N", "how many clients"),
        switch("--smoke", "small sizes"),
    ];

    fn run(words: &[&str]) -> Parsed {
        parse_from(
            words.iter().map(|w| (*w).to_owned()),
            "prog [options]",
            OPTIONS,
        )
    }

    #[test]
    fn help_prints_every_flag_and_succeeds() {
        let Parsed::Exit(text, 0) = run(&["--help"]) else {
            panic!("--help must exit 0")
        };
        assert!(
            text.contains("--clients N") && text.contains("--smoke"),
            "{text}"
        );
    }

    #[test]
    fn values_switches_and_words_are_read() {
        let Parsed::Run(args) = run(&["fanout", "--clients", "12", "--smoke"]) else {
            panic!()
        };
        assert_eq!(args.positional, ["fanout"]);
        assert_eq!(args.get::<usize>("--clients"), Ok(Some(12)));
        assert!(args.has("--smoke"));
        assert_eq!(args.get::<usize>("--missing"), Ok(None));
    }

    #[test]
    fn mistakes_exit_2_with_the_usage() {
        for words in [&["--nope"][..], &["--clients"][..]] {
            let Parsed::Exit(text, 2) = run(words) else {
                panic!("{words:?} must fail")
            };
            assert!(text.contains("usage: prog"), "{text}");
        }
        let Parsed::Run(args) = run(&["--clients", "many"]) else {
            panic!()
        };
        assert!(args.get::<usize>("--clients").is_err());
    }
}
