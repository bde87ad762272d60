//! The one way a named enumeration becomes a command-line value: its [`Choice`] names are the
//! possible values (listed by `--help`, suggested on a typo), and the parsed value is the
//! library's own type — no parallel copy of the enum, no mapping back.

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use maxl_core::Choice;

/// The value parser of `T`: `#[arg(long, value_parser = choice::<Method>())]`.
pub fn choice<T: Choice>() -> impl TypedValueParser<Value = T> {
    let values = T::ALL.iter().map(|v| match v.help() {
        "" => PossibleValue::new(v.name()),
        help => PossibleValue::new(v.name()).help(help),
    });
    PossibleValuesParser::new(values).map(|name| {
        // The possible-values parser has accepted exactly the listed names.
        T::from_name(&name).expect("a listed name")
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use maxl_core::config::{Method, Schedule};

    #[derive(Parser)]
    struct Args {
        #[arg(long, value_parser = super::choice::<Method>())]
        method: Option<Method>,
        #[arg(long, value_parser = super::choice::<Schedule>(), default_value = "fused")]
        schedule: Schedule,
    }

    #[test]
    fn names_parse_to_the_library_values_and_others_are_refused() {
        let a = Args::try_parse_from(["x", "--method", "maxl-no-entropy"]).unwrap();
        assert_eq!(a.method, Some(Method::MaxlNoEntropy));
        assert_eq!(a.schedule, Schedule::Fused);
        let e = Args::try_parse_from(["x", "--method", "maxl-no"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("possible values: maxl, maxl-no-entropy, maxl-weighted, single"),
            "{e}"
        );
    }
}
