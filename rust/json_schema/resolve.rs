//! `$ref` resolution inside one schema document.
//!
//! Every subschema is named by its JSON pointer from the document root, so
//! a reference resolves to a pointer and recursion needs nothing special:
//! the compiler memoises grammar symbols by pointer. `$id` changes the base
//! URI that relative references resolve against, and `$anchor` names a
//! location; both are collected in one walk. References that leave the
//! document (remote schemas) are an error: nothing is fetched.

use std::collections::HashMap;

use serde_json::Value;

/// Keywords whose value is a subschema.
const SCHEMA_KW: &[&str] = &[
    "additionalProperties",
    "items",
    "additionalItems",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
];
/// Keywords whose value is an object of subschemas.
const MAP_KW: &[&str] = &["properties", "patternProperties", "$defs", "definitions", "dependentSchemas"];
/// Keywords whose value is an array of subschemas.
const LIST_KW: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems", "items"];

/// The base URI of a document without `$id`.
const ROOT_BASE: &str = "tokensieve:/root.json";

pub struct Doc<'a> {
    pub root: &'a Value,
    /// Absolute URI (no fragment) of each resource → its pointer.
    resources: HashMap<String, String>,
    /// `uri#anchor` → pointer.
    anchors: HashMap<String, String>,
    /// Base URI in force at each visited subschema pointer.
    bases: HashMap<String, String>,
}

impl<'a> Doc<'a> {
    pub fn new(root: &'a Value) -> Doc<'a> {
        let mut d = Doc {
            root,
            resources: HashMap::new(),
            anchors: HashMap::new(),
            bases: HashMap::new(),
        };
        d.resources.insert(ROOT_BASE.to_string(), String::new());
        d.walk(root, String::new(), ROOT_BASE.to_string(), 0);
        d
    }

    fn walk(&mut self, v: &Value, ptr: String, base: String, depth: usize) {
        if depth > 512 {
            return;
        }
        let Value::Object(o) = v else { return };
        let mut base = base;
        if let Some(Value::String(id)) = o.get("$id") {
            let abs = join(&base, id);
            let (uri, frag) = split_frag(&abs);
            base = uri.to_string();
            self.resources.entry(base.clone()).or_insert_with(|| ptr.clone());
            if !frag.is_empty() && !frag.starts_with('/') {
                // Draft-07 style `"$id": "#foo"` is an anchor.
                self.anchors.insert(format!("{base}#{frag}"), ptr.clone());
            }
        }
        if let Some(Value::String(a)) = o.get("$anchor") {
            self.anchors.insert(format!("{base}#{a}"), ptr.clone());
        }
        self.bases.insert(ptr.clone(), base.clone());
        for (k, sub) in o {
            let kp = format!("{ptr}/{}", escape(k));
            if SCHEMA_KW.contains(&k.as_str()) && sub.is_object() {
                self.walk(sub, kp.clone(), base.clone(), depth + 1);
            }
            if MAP_KW.contains(&k.as_str()) {
                if let Value::Object(m) = sub {
                    for (name, s) in m {
                        self.walk(s, format!("{kp}/{}", escape(name)), base.clone(), depth + 1);
                    }
                }
            }
            if LIST_KW.contains(&k.as_str()) {
                if let Value::Array(xs) = sub {
                    for (i, s) in xs.iter().enumerate() {
                        self.walk(s, format!("{kp}/{i}"), base.clone(), depth + 1);
                    }
                }
            }
        }
    }

    /// The value at a JSON pointer.
    pub fn get(&self, ptr: &str) -> Option<&'a Value> {
        if ptr.is_empty() {
            return Some(self.root);
        }
        self.root.pointer(ptr)
    }

    /// The base URI in force at `ptr`.
    pub fn base(&self, ptr: &str) -> String {
        if let Some(b) = self.bases.get(ptr) {
            return b.clone();
        }
        // Not visited (a `$ref` into a non-schema keyword): the nearest
        // visited ancestor's base.
        let mut p = ptr;
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            if let Some(b) = self.bases.get(p) {
                return b.clone();
            }
        }
        ROOT_BASE.to_string()
    }

    /// Resolve `reference` found at `at` to a pointer in this document.
    pub fn resolve(&self, reference: &str, at: &str) -> Result<String, String> {
        let abs = join(&self.base(at), reference);
        let (uri, frag) = split_frag(&abs);
        let frag = percent_decode(frag);
        let res = self
            .resources
            .get(uri)
            .ok_or_else(|| format!("$ref {reference:?} points outside this schema (remote references are not fetched)"))?;
        let ptr = if frag.is_empty() {
            res.clone()
        } else if frag.starts_with('/') {
            format!("{res}{frag}")
        } else {
            self.anchors
                .get(&format!("{uri}#{frag}"))
                .cloned()
                .ok_or_else(|| format!("$ref {reference:?}: no $anchor {frag:?}"))?
        };
        if self.get(&ptr).is_none() {
            return Err(format!("$ref {reference:?} points to nothing"));
        }
        Ok(ptr)
    }
}

fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

fn split_frag(u: &str) -> (&str, &str) {
    u.split_once('#').unwrap_or((u, ""))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 3986 reference resolution (the common cases: absolute, network
/// path, absolute path, relative path, fragment only).
pub fn join(base: &str, r: &str) -> String {
    if r.is_empty() {
        return base.to_string();
    }
    if r.starts_with('#') {
        return format!("{}{r}", split_frag(base).0);
    }
    let has_scheme = r.find(':').is_some_and(|i| {
        let s = &r[..i];
        !s.is_empty()
            && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    if has_scheme {
        return remove_dots(r);
    }
    let base = split_frag(base).0;
    let base = base.split_once('?').map_or(base, |(b, _)| b);
    let scheme_end = base.find(':').map_or(0, |i| i + 1);
    let (scheme, rest) = base.split_at(scheme_end);
    if let Some(stripped) = r.strip_prefix("//") {
        return format!("{scheme}//{stripped}");
    }
    let (authority, path) = match rest.strip_prefix("//") {
        Some(a) => match a.find('/') {
            Some(i) => (format!("//{}", &a[..i]), &a[i..]),
            None => (format!("//{a}"), ""),
        },
        None => (String::new(), rest),
    };
    let new_path = if r.starts_with('/') {
        r.to_string()
    } else if r.starts_with('?') {
        format!("{path}{r}")
    } else {
        match path.rfind('/') {
            Some(i) => format!("{}{r}", &path[..=i]),
            None if !authority.is_empty() => format!("/{r}"),
            None => r.to_string(),
        }
    };
    remove_dots(&format!("{scheme}{authority}{new_path}"))
}

fn remove_dots(u: &str) -> String {
    if !u.contains("./") && !u.ends_with("/.") && !u.ends_with("/..") {
        return u.to_string();
    }
    let (head, frag) = u.split_once('#').map_or((u, None), |(a, b)| (a, Some(b)));
    let mut out: Vec<&str> = Vec::new();
    for seg in head.split('/') {
        match seg {
            "." => {}
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
            }
            s => out.push(s),
        }
    }
    let mut s = out.join("/");
    if head.ends_with("/.") || head.ends_with("/..") {
        s.push('/');
    }
    match frag {
        Some(f) => format!("{s}#{f}"),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins() {
        assert_eq!(join("http://a.com/b/c.json", "d.json"), "http://a.com/b/d.json");
        assert_eq!(join("http://a.com/b/c.json", "/x"), "http://a.com/x");
        assert_eq!(join("http://a.com/b/c.json", "#/defs"), "http://a.com/b/c.json#/defs");
        assert_eq!(join("http://a.com/b/c.json", "../x.json"), "http://a.com/x.json");
        assert_eq!(join("urn:uuid:1234", "#foo"), "urn:uuid:1234#foo");
        assert_eq!(join(ROOT_BASE, "#/$defs/a"), "tokensieve:/root.json#/$defs/a");
    }

    #[test]
    fn resolves_ids_anchors_pointers() {
        let v: Value = serde_json::json!({
            "$id": "http://x.com/root.json",
            "$defs": {
                "a": {"$id": "a.json", "$defs": {"b": {"$anchor": "bee", "type": "integer"}}},
                "c~/d": {"type": "string"}
            }
        });
        let d = Doc::new(&v);
        assert_eq!(d.resolve("#/$defs/a", "").unwrap(), "/$defs/a");
        assert_eq!(d.resolve("a.json#bee", "").unwrap(), "/$defs/a/$defs/b");
        assert_eq!(d.resolve("#bee", "/$defs/a").unwrap(), "/$defs/a/$defs/b");
        assert_eq!(d.resolve("#/$defs/c~0~1d", "").unwrap(), "/$defs/c~0~1d");
        assert_eq!(d.resolve("#/$defs/c%7E0~1d", "").unwrap(), "/$defs/c~0~1d");
        assert!(d.resolve("http://other.com/x.json", "").is_err());
        assert!(d.resolve("#/$defs/zzz", "").is_err());
    }
}
