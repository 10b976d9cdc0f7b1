//! `[[triggers]]`: events subcar publishes itself for mutations it proxies
//! (SPEC section 4, "Events from mutations"). The CEL `payload` and the
//! `mutation` field are checked against the schema by
//! [`crate::subscriptions::crosscheck`], which knows the variables and the
//! Mutation type; here only what the file alone decides.

use serde::Deserialize;

use super::values::Problems;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// A field of the upstream's Mutation root type.
    pub mutation: String,
    /// The topic the event is published on, as if posted to the webhook.
    pub topic: String,
    /// CEL over `args`, `result` and `claims`: the event's payload.
    pub payload: String,
}

/// Every key set and not blank.
pub(super) fn check(triggers: &[TriggerConfig], p: &mut Problems) {
    for (i, t) in triggers.iter().enumerate() {
        for (key, value, expected) in [
            ("mutation", &t.mutation, "a field of the Mutation type"),
            ("topic", &t.topic, "the topic of a subscription field"),
            (
                "payload",
                &t.payload,
                "a CEL expression over args, result, claims",
            ),
        ] {
            if value.trim().is_empty() {
                p.push(format!("triggers[{i}].{key}: empty: expected {expected}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::tests::{MINIMAL, parse, problems};

    const ONE: &str = "\n[[triggers]]\nmutation = \"updateIncident\"\ntopic = \"incident.updated\"\npayload = \"{'id': args.id}\"\n";

    #[test]
    fn triggers_parse_and_name_their_problems() {
        let c = parse(&format!("{MINIMAL}{ONE}")).unwrap();
        assert_eq!(c.triggers[0].mutation, "updateIncident");
        assert_eq!(c.triggers[0].payload, "{'id': args.id}");
        let msg = problems(&format!(
            "{MINIMAL}{ONE}[[triggers]]\nmutation = \"x\"\ntopic = \" \"\npayload = \"1\"\n"
        ));
        assert!(msg.contains("triggers[1].topic: empty"), "{msg}");
        let msg = problems(&format!(
            "{MINIMAL}[[triggers]]\nmutation = \"x\"\ntopic = \"t\"\n"
        ));
        assert!(
            msg.contains("triggers[0]") && msg.contains("payload"),
            "{msg}"
        );
        let msg = problems(&format!("{MINIMAL}{ONE}when = \"x\"\n"));
        assert!(msg.contains("triggers[0]") && msg.contains("when"), "{msg}");
    }

    #[test]
    fn env_overrides_a_trigger_by_index() {
        let env = [(
            "SUBCAR_TRIGGERS__0__TOPIC".to_owned(),
            "incident.changed".to_owned(),
        )];
        let c = Config::parse(&format!("{MINIMAL}{ONE}"), env).unwrap();
        assert_eq!(c.triggers[0].topic, "incident.changed");
        let env = [("SUBCAR_TRIGGERS__3__TOPIC".to_owned(), "x".to_owned())];
        let msg = Config::parse(&format!("{MINIMAL}{ONE}"), env)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("SUBCAR_TRIGGERS__3__TOPIC"), "{msg}");
    }
}
