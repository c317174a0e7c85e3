//! The OVF environment document (DMTF DSP0243 `ovf-env.xml`): what vSphere
//! hands a deployed VM, in `guestinfo.ovfEnv` and on the ISO transport CD.
//!
//! ```xml
//! <Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"
//!      xmlns:oe="http://schemas.dmtf.org/ovf/environment/1" ...>
//!    <PlatformSection>...</PlatformSection>
//!    <PropertySection>
//!          <Property oe:key="guestinfo.kiln.role" oe:value="server"/>
//!    </PropertySection>
//!    <ve:EthernetAdapterSection>...</ve:EthernetAdapterSection>
//! </Environment>
//! ```
//!
//! Only the VM's own `PropertySection` (a child of `Environment`; an
//! `Entity` of a multi-VM vApp has its own) is read. Prefixes differ from
//! tool to tool, so elements and attributes match on their local names.

use roxmltree::{Document, Node};

/// The `Property` keys and values of the environment, in document order.
/// A `Property` without a value has an empty one. Errors never quote a
/// value: one may be the join token.
pub fn properties(xml: &[u8]) -> Result<Vec<(String, String)>, String> {
    let text = std::str::from_utf8(xml).map_err(|e| {
        format!(
            "the OVF environment is not UTF-8 text (byte {})",
            e.valid_up_to()
        )
    })?;
    let text = text.trim_start_matches('\u{feff}');
    let doc = Document::parse(text)
        .map_err(|e| format!("the OVF environment is not well-formed XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "Environment" {
        return Err(format!(
            "the OVF environment's root element is <{}>, not <Environment>",
            root.tag_name().name()
        ));
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for prop in elements(root, "PropertySection").flat_map(|s| elements(s, "Property")) {
        let Some(key) = attribute(prop, "key") else {
            return Err("the OVF environment has a <Property> without a key".to_owned());
        };
        if out.iter().any(|(k, _)| k == key) {
            return Err(format!("the OVF environment sets property {key} twice"));
        }
        let value = attribute(prop, "value").unwrap_or_default();
        out.push((key.to_owned(), value.to_owned()));
    }
    Ok(out)
}

/// The child elements of `node` named `name` (any namespace).
fn elements<'a, 'i>(node: Node<'a, 'i>, name: &'static str) -> impl Iterator<Item = Node<'a, 'i>> {
    node.children()
        .filter(move |n| n.is_element() && n.tag_name().name() == name)
}

/// The attribute `name` (any namespace, `oe:key` or plain `key`).
fn attribute<'a>(node: Node<'a, '_>, name: &str) -> Option<&'a str> {
    node.attributes()
        .find(|a| a.name() == name)
        .map(|a| a.value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_properties_by_local_name() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ovfenv:Environment xmlns:ovfenv="http://schemas.dmtf.org/ovf/environment/1">
  <ovfenv:PropertySection>
    <ovfenv:Property ovfenv:key="a" ovfenv:value="x &amp; y &lt;z&gt; &quot;q&quot; &#65;&#x42;"/>
    <ovfenv:Property ovfenv:key="empty"/>
  </ovfenv:PropertySection>
  <Entity oe:id="other" xmlns:oe="http://schemas.dmtf.org/ovf/environment/1">
    <PropertySection><Property oe:key="b" oe:value="not ours"/></PropertySection>
  </Entity>
</ovfenv:Environment>"#;
        assert_eq!(
            properties(xml.as_bytes()).unwrap(),
            [
                ("a".to_owned(), "x & y <z> \"q\" AB".to_owned()),
                ("empty".to_owned(), String::new())
            ]
        );
    }

    #[test]
    fn malformed() {
        let cases: &[(&[u8], &str)] = &[
            (b"<Environment><PropertySection>", "not well-formed XML"),
            (b"<Envelope/>", "root element is <Envelope>"),
            (b"\xff<Environment/>", "not UTF-8"),
            (
                b"<Environment><PropertySection><Property value='v'/></PropertySection></Environment>",
                "without a key",
            ),
            (
                b"<Environment><PropertySection><Property key='k'/><Property key='k'/></PropertySection></Environment>",
                "sets property k twice",
            ),
            (
                b"<!DOCTYPE x [<!ENTITY e 'boom'>]><Environment/>",
                "DTD",
            ),
        ];
        for (xml, want) in cases {
            let e = properties(xml).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        assert_eq!(properties(b"\xef\xbb\xbf<Environment/>").unwrap(), []);
    }
}
