//! Enumerations with a fixed set of kebab-case names — the names configs, manifests and command
//! lines use. Command-line crates give every such type its parser from this one trait (see
//! `maxl-cli`), so no enum is copied to be parsed.

/// A value chosen by name from a fixed list.
pub trait Choice: Copy + Send + Sync + 'static {
    /// Every value, in the order `--help` lists them.
    const ALL: &'static [Self];

    /// The value's name (as in YAML and on the command line).
    fn name(self) -> &'static str;

    /// A one-line description for `--help`; empty for none.
    fn help(self) -> &'static str {
        ""
    }

    /// The value called `name`, if there is one.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::Choice;
    use crate::config::{DatasetKind, MetaGradientMode, Method, Schedule, StreamMode};

    /// The names a command line accepts are the names YAML configs use.
    fn same_as_serde<T: Choice + serde::Serialize + serde::de::DeserializeOwned + PartialEq>() {
        for &v in T::ALL {
            let yaml = serde_yaml_ng::to_string(&v).unwrap();
            assert_eq!(yaml.trim(), v.name());
            assert!(T::from_name(v.name()) == Some(v));
            assert!(serde_yaml_ng::from_str::<T>(v.name()).unwrap() == v);
        }
        assert!(T::from_name("no-such-name").is_none());
    }

    #[test]
    fn every_name_is_the_yaml_name() {
        same_as_serde::<Method>();
        same_as_serde::<Schedule>();
        same_as_serde::<MetaGradientMode>();
        same_as_serde::<DatasetKind>();
        same_as_serde::<StreamMode>();
        let names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            [
                "maxl",
                "maxl-no-entropy",
                "maxl-weighted",
                "single",
                "random",
                "human"
            ]
        );
    }
}
