//! A small element tree over quick-xml, for the few short XML documents NSX-V answers with.

use quick_xml::Reader;
use quick_xml::events::Event;

/// Deeper documents are refused rather than followed: NSX-V's answers are three levels deep.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    /// The element's own text, unescaped and trimmed.
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    pub fn child<'a>(&'a self, name: &'a str) -> Option<&'a Element> {
        self.children_named(name).next()
    }

    pub fn text_of<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

/// Parses a whole document into its root element. Malformed, truncated or empty input, and
/// anything after the root element, is an error.
pub fn parse(xml: &str) -> Result<Element, String> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("malformed XML at byte {}: {e}", reader.error_position()))?;
        match event {
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                return Err(format!(
                    "unexpected element <{}> after the document",
                    start.local_name().as_ref()
                ));
            }
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err("XML nested too deeply".into());
                }
                stack.push(Element {
                    name: start.local_name().as_ref().to_string(),
                    ..Element::default()
                });
            }
            Event::Empty(start) => {
                let element = Element {
                    name: start.local_name().as_ref().to_string(),
                    ..Element::default()
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::End(_) => {
                let mut done = stack.pop().ok_or("unbalanced end tag")?;
                done.text = done.text.trim().to_string();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Text(text) => {
                let content = text.xml10_content();
                match stack.last_mut() {
                    Some(current) => current.text.push_str(&content),
                    None if content.trim().is_empty() => {}
                    None => return Err("text outside the root element".into()),
                }
            }
            Event::CData(data) => {
                let current = stack.last_mut().ok_or("CDATA outside the root element")?;
                current.text.push_str(&data);
            }
            Event::GeneralRef(reference) => {
                let name: &str = &reference;
                let resolved = quick_xml::escape::unescape(&format!("&{name};"))
                    .map_err(|_| format!("unknown entity &{name};"))?
                    .into_owned();
                let current = stack.last_mut().ok_or("entity outside the root element")?;
                current.text.push_str(&resolved);
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::DocType(_) => return Err("DOCTYPE is not accepted".into()),
        }
    }
    if !stack.is_empty() {
        return Err("truncated XML: the document ends inside an element".into());
    }
    root.ok_or_else(|| "empty answer: no XML element".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_elements_and_entities() {
        let root =
            parse("<?xml version=\"1.0\"?><a><b>x &amp; y&#33;</b><c/><b><![CDATA[<z>]]></b></a>")
                .expect("parses");
        assert_eq!(root.name, "a");
        let texts: Vec<&str> = root.children_named("b").map(|b| b.text.as_str()).collect();
        assert_eq!(texts, ["x & y!", "<z>"]);
        assert_eq!(root.text_of("c"), Some(""));
    }

    #[test]
    fn refuses_broken_documents() {
        for bad in [
            "",
            "   ",
            "<a>",
            "<a></b>",
            "<a/><b/>",
            "text",
            "<a>&bogus;</a>",
            "<!DOCTYPE a><a/>",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(&deep).is_err());
    }
}
