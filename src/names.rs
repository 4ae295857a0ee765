//! One spelling for each choice: the names a fieldless enum has on command lines, in files and
//! in errors, written once in a table from which [`named_enum!`] makes the rest.

/// Gives a fieldless enum its names from one table: `ALL` (every variant, in the table's
/// order), `name`, `names` (the list errors and help texts show), `Display`, and, when the
/// configuration field it is checked as is given, a case-insensitive `FromStr` whose error lists
/// the names. The list in an error can then never drift from the variants.
macro_rules! named_enum {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every variant, in the order of its names.
            pub const ALL: [$ty; [$($name),+].len()] = [$($ty::$variant),+];

            /// The name used on command lines, in files and in errors.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }

            /// Every name, for help texts and errors: `a, b or c`.
            pub fn names() -> String {
                $crate::names::list(&[$($name),+])
            }

            /// The variant named `name`, case-insensitively and ignoring surrounding spaces.
            fn from_name(name: &str) -> Option<Self> {
                let wanted = name.trim().to_ascii_lowercase();
                Self::ALL.into_iter().find(|v| v.name() == wanted)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
    ($ty:ident as $field:literal { $($variant:ident => $name:literal),+ $(,)? }) => {
        named_enum!($ty { $($variant => $name),+ });

        impl std::str::FromStr for $ty {
            type Err = $crate::error::Error;

            fn from_str(s: &str) -> $crate::error::Result<Self> {
                Self::from_name(s)
                    .ok_or_else(|| $crate::error::Error::invalid_config($field, Self::names(), s))
            }
        }
    };
}

/// The first `shown` of `names`, quoted, then how many more: an error about a model with
/// ImageNet's 1000 classes stays one readable line.
pub(crate) fn abridged(names: &[String], shown: usize) -> String {
    let quoted: Vec<String> = names.iter().take(shown).map(|n| format!("{n:?}")).collect();
    match names.len().saturating_sub(shown) {
        0 => format!("[{}]", quoted.join(", ")),
        more => format!("[{}, and {more} more]", quoted.join(", ")),
    }
}

/// `a`, `a or b`, `a, b or c`.
pub(crate) fn list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Fruit {
        Apple,
        Pear,
        Quince,
    }
    named_enum!(Fruit as "fruit" { Apple => "apple", Pear => "pear", Quince => "quince" });

    #[test]
    fn names_parse_print_and_list_from_one_table() {
        assert_eq!(Fruit::ALL, [Fruit::Apple, Fruit::Pear, Fruit::Quince]);
        assert_eq!(Fruit::Pear.to_string(), "pear");
        assert_eq!(" Quince ".parse::<Fruit>().unwrap(), Fruit::Quince);
        let err = "plum".parse::<Fruit>().unwrap_err().to_string();
        assert!(
            err.contains("`fruit` is plum") && err.contains("apple, pear or quince"),
            "{err}"
        );
        assert_eq!(super::list(&["a", "b"]), "a or b");
        let many: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        assert_eq!(super::abridged(&many, 2), "[\"0\", \"1\", and 998 more]");
    }
}
