use super::*;
use crate::grammar::earley::{CompiledGrammar, GrammarState};
use crate::grammar::GrammarLimits;
use serde_json::json;

fn build(schema: Value) -> CompiledGrammar {
    let c = compile(&schema, &Options::default()).unwrap_or_else(|e| panic!("{schema}: {e}"));
    CompiledGrammar::new(&c.grammar, &GrammarLimits::default()).unwrap()
}

fn accepts(g: &CompiledGrammar, s: &str) -> bool {
    let mut st = GrammarState::new(g).unwrap();
    for &b in s.as_bytes() {
        if !st.push_byte(g, b) {
            return false;
        }
    }
    st.is_accepting(g)
}

fn check(schema: Value, good: &[&str], bad: &[&str]) {
    let g = build(schema.clone());
    for s in good {
        assert!(accepts(&g, s), "{schema} should accept {s}");
    }
    for s in bad {
        assert!(!accepts(&g, s), "{schema} should reject {s}");
    }
}

#[test]
fn objects_in_schema_order() {
    let s = json!({"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "string"}}, "required": ["a"], "additionalProperties": false});
    check(
        s,
        &[r#"{"b": 1, "a": "x"}"#, r#"{"a":"x"}"#, r#" { "b" : 1 , "a" : "" } "#],
        &[r#"{"a": "x", "b": 1}"#, r#"{"b": 1}"#, r#"{"a": 1}"#, r#"{"a": "x", "c": 1}"#, r#"{}"#],
    );
}

#[test]
fn additional_properties_exclude_listed_names() {
    let s = json!({"properties": {"a": {"type": "integer"}}, "additionalProperties": {"type": "string"}});
    check(
        s,
        &[r#"{"a": 1, "b": "x"}"#, r#"{"b": "x", "ab": "y"}"#, "{}", r#""not an object""#],
        &[r#"{"a": "x"}"#, r#"{"b": 1}"#],
    );
}

#[test]
fn other_keys_are_any_string_but_the_listed_names() {
    // Names that are prefixes of each other, hold an escape or a non-ASCII
    // character, and one that is forbidden: other keys are the JSON
    // strings but exactly those names' spellings.
    let s = json!({"properties": {"a": {"type": "integer"}, "ab": {"type": "integer"}, "q\"": {"type": "integer"}, "é": {"type": "integer"}, "x": false}, "additionalProperties": {"type": "string"}});
    check(
        s,
        &[
            r#"{"a": 1, "ab": 2, "q\"": 3, "é": 4}"#,
            r#"{"abc": "s"}"#,
            r#"{"": "s"}"#,
            r#"{"q": "s"}"#,
            r#"{"q\"\"": "s"}"#,
            r#"{"éé": "s"}"#,
            r#"{"x1": "s"}"#,
            r#"{"A": "s"}"#,
        ],
        &[
            r#"{"a": "s"}"#,
            r#"{"ab": "s"}"#,
            r#"{"q\"": "s"}"#,
            r#"{"é": "s"}"#,
            r#"{"x": "s"}"#,
            r#"{"x": 1}"#,
            r#"{"abc": 1}"#,
        ],
    );
}

#[test]
fn property_counts() {
    let s = json!({"type": "object", "minProperties": 1, "maxProperties": 2});
    check(s, &[r#"{"a":1}"#, r#"{"a":1,"b":2}"#], &["{}", r#"{"a":1,"b":2,"c":3}"#]);
}

#[test]
fn arrays_with_bounds_and_prefix() {
    check(
        json!({"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "integer"}, "minItems": 2, "maxItems": 3}),
        &[r#"["a", 1]"#, r#"["a",1,2]"#],
        &[r#"["a"]"#, r#"[1, 1]"#, r#"["a",1,2,3]"#, r#"["a","b"]"#],
    );
    check(
        json!({"items": false, "prefixItems": [true]}),
        &["[]", "[1]", r#"[{"x":[]}]"#],
        &["[1,2]"],
    );
    check(json!({"type": "array", "minItems": 3}), &["[1,2,3]", "[1,2,3,4,5]"], &["[1,2]"]);
}

#[test]
fn numbers_and_integers() {
    check(
        json!({"type": "integer", "minimum": -5, "exclusiveMaximum": 10}),
        &["-5", "0", "9", "9.0", "-0"],
        &["-6", "10", "9.5", "1e1"],
    );
    check(
        json!({"type": "number", "minimum": 0.5, "maximum": 2.25}),
        &["0.5", "1", "2.25", "2.250"],
        &["0.49", "2.26", "-1"],
    );
    check(
        json!({"type": "integer", "multipleOf": 3, "minimum": 0, "maximum": 20}),
        &["0", "3", "18"],
        &["4", "21"],
    );
    check(
        json!({"type": "integer", "multipleOf": 4}),
        &["0", "8", "-12", "100", "1000"],
        &["2", "10", "102"],
    );
    check(json!({"type": "number", "multipleOf": 0.01}), &["1.25", "3", "0.1"], &["1.255"]);
    check(json!({"type": "number"}), &["1e5", "-0.5E-3", "3"], &["01", "1.", ".5"]);
}

#[test]
fn strings() {
    check(
        json!({"type": "string", "minLength": 2, "maxLength": 3}),
        &[r#""ab""#, r#""é\nx""#],
        &[r#""a""#, r#""abcd""#],
    );
    check(json!({"type": "string", "pattern": "^[a-c]+$"}), &[r#""abc""#], &[r#""abd""#, r#""""#]);
    check(json!({"type": "string", "format": "date"}), &[r#""2024-02-29""#], &[r#""2023-02-29""#]);
    // Long bounds: counted in chunks by the parser.
    let g = build(json!({"type": "string", "minLength": 150, "maxLength": 300}));
    for n in [149usize, 150, 200, 255, 256, 299, 300, 301] {
        let s = format!("\"{}\"", "x".repeat(n));
        assert_eq!(accepts(&g, &s), (150..=300).contains(&n), "length {n}");
    }
    let g = build(json!({"type": "string", "maxLength": 65535}));
    assert!(accepts(&g, &format!("\"{}\"", "ab ".repeat(500))));
    // No whitespace sneaks in between chunks.
    assert!(!accepts(&g, &format!("\"{}\n{}\"", "x".repeat(64), "y")));
    let g = build(json!({"type": "string", "minLength": 1000}));
    assert!(!accepts(&g, &format!("\"{}\"", "x".repeat(999))));
    assert!(accepts(&g, &format!("\"{}\"", "x".repeat(1000))));
    assert!(accepts(&g, &format!("\"{}\"", "x".repeat(5000))));
}

#[test]
fn enums_consts_and_unions() {
    check(
        json!({"enum": ["a", 1, null, [1, {"x": true}]]}),
        &[r#""a""#, "1", "1.0", "null", r#"[1, {"x": true}]"#],
        &[r#""b""#, "2", "[1]"],
    );
    check(
        json!({"const": {"a": [1, 2]}}),
        &[r#"{"a": [1, 2]}"#, r#"{"a":[1,2]}"#],
        &[r#"{"a": [2, 1]}"#],
    );
    check(
        json!({"type": "string", "enum": ["a", 1, "bb"], "maxLength": 1}),
        &[r#""a""#],
        &["1", r#""bb""#],
    );
    check(
        json!({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 1}]}),
        &["1", r#""x""#],
        &[r#""xy""#, "null"],
    );
    check(json!({"oneOf": [{"type": "integer"}, {"type": "boolean"}]}), &["1", "true"], &["null"]);
    check(
        json!({"type": "object", "properties": {"n": {"type": "integer"}}, "allOf": [{"required": ["n"]}, {"properties": {"n": {"minimum": 3}}}]}),
        &[r#"{"n": 3}"#],
        &[r#"{"n": 2}"#, "{}"],
    );
}

#[test]
fn recursive_refs() {
    let tree = json!({
        "$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}, "required": ["v"], "additionalProperties": false}},
        "$ref": "#/$defs/node"
    });
    check(
        tree,
        &[r#"{"v": 1, "kids": [{"v": 2}, {"v": 3, "kids": [{"v": 4}]}]}"#],
        &[r#"{"v": 1, "kids": [{"w": 2}]}"#],
    );
    let list = json!({"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}}, "additionalProperties": false});
    check(list, &[r#"{"next": {"next": {"next": null}}}"#, "{}"], &[r#"{"next": 1}"#]);
}

#[test]
fn separators_and_compact() {
    let s = json!({"type": "object", "properties": {"a": {"type": "array"}}});
    let opts = Options {
        whitespace: Whitespace::Separators {
            item: ", ".into(),
            key: ": ".into(),
        },
        ..Options::default()
    };
    let g = CompiledGrammar::new(&compile(&s, &opts).unwrap().grammar, &GrammarLimits::default()).unwrap();
    assert!(accepts(&g, r#"{"a": [1, 2]}"#) && !accepts(&g, r#"{"a":[1,2]}"#));
    let opts = Options {
        whitespace: Whitespace::Compact,
        ..Options::default()
    };
    let g = CompiledGrammar::new(&compile(&s, &opts).unwrap().grammar, &GrammarLimits::default()).unwrap();
    assert!(accepts(&g, r#"{"a":[1,2]}"#) && !accepts(&g, r#"{"a": [1,2]}"#));
}

#[test]
fn errors_are_clear() {
    let err = |s: Value| compile(&s, &Options::default()).unwrap_err().to_string();
    assert!(err(json!({"minLength": "a"})).contains("minLength"));
    assert!(err(json!({"$ref": "#/$defs/missing"})).contains("missing"));
    assert!(err(json!({"$ref": "#"})).contains("cycle"));
    assert!(err(json!({"$ref": "http://example.com/x.json"})).contains("remote"));
    assert!(err(json!({"type": "string", "pattern": "(?=a)"})).contains("lookaround"));
    assert!(err(json!({"type": "integer", "minimum": 5, "maximum": 1})).contains("no JSON value"));
    assert!(err(json!({"enum": []})).contains("no JSON value"));
    let e = err(json!({"properties": {"a": {"uniqueItems": true}}}));
    assert!(e.contains("uniqueItems") && e.contains("#/properties/a/uniqueItems"), "{e}");
    let lax = compile(
        &json!({"properties": {"a": {"uniqueItems": true}}}),
        &Options {
            strict: false,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(lax.warnings.len(), 1);
}

#[test]
fn one_of_disjoint_objects() {
    // Closed objects with different required keys; a required key whose
    // types differ; a const discriminator.
    for s in [
        json!({"oneOf": [
            {"type": "object", "properties": {"a": {}}, "required": ["a"], "additionalProperties": false},
            {"type": "object", "properties": {"b": {}}, "required": ["b"], "additionalProperties": false}]}),
        json!({"oneOf": [
            {"type": "object", "properties": {"k": {"type": "string"}}, "required": ["k"]},
            {"type": "object", "properties": {"k": {"type": "integer"}}, "required": ["k"]}]}),
        json!({"oneOf": [
            {"properties": {"kind": {"const": "x"}}, "required": ["kind"], "type": "object"},
            {"properties": {"kind": {"const": "y"}}, "required": ["kind"], "type": "object"}]}),
    ] {
        build(s);
    }
    // Overlapping branches: each excludes the others.
    let overlapping = json!({"oneOf": [{"type": "object", "required": ["a"]}, {"type": "object", "required": ["b"]}]});
    check(overlapping, &[r#"{"a": 1}"#, r#"{"b": 1}"#], &["{}", r#"{"a": 1, "b": 2}"#, "1"]);
}

#[test]
fn pattern_with_lengths() {
    check(
        json!({"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "minLength": 2, "maxLength": 4}),
        &[r#""ab""#, r#""a_1z""#],
        &[r#""a""#, r#""abcde""#, r#""1ab""#],
    );
}

#[test]
fn union_products_are_bounded() {
    // allOf of 20 two-branch anyOf: 2^20 combinations; refused, not built.
    let groups: Vec<Value> = (0..20)
        .map(|i| json!({"anyOf": [{"properties": {format!("a{i}"): {"type": "integer"}}}, {"properties": {format!("b{i}"): {"type": "string"}}}]}))
        .collect();
    let t = std::time::Instant::now();
    let e = compile(&json!({"allOf": groups}), &Options::default()).unwrap_err().to_string();
    assert!(e.contains("combinations"), "{e}");
    assert!(t.elapsed().as_secs() < 20);
}

#[test]
fn universal_pattern_properties() {
    check(
        json!({"properties": {"a": {"type": "integer"}}, "patternProperties": {".*": {"type": ["integer", "string"]}}}),
        &[r#"{"a": 1, "b": "x", "c": 2}"#, "{}"],
        &[r#"{"a": "x"}"#, r#"{"b": null}"#],
    );
}

#[test]
fn format_lengths_implied() {
    check(
        json!({"type": "string", "format": "uuid", "maxLength": 36}),
        &[r#""2eb8aa08-aa98-11ea-b4aa-73b441d16380""#],
        &[r#""x""#],
    );
    assert!(compile(&json!({"type": "string", "format": "uuid", "maxLength": 10}), &Options::default()).is_err());
    assert!(compile(&json!({"type": "string", "format": "email", "maxLength": 254}), &Options::default()).is_err());
}

#[test]
fn lazily_created_states_without_rules_derive_nothing() {
    check(
        json!({"type": "object", "required": ["c"], "properties": {"a": {}}, "maxProperties": 1}),
        &[r#"{"c": 1}"#],
        &[r#"{"a": 1}"#, r#"{"a": 1, "c": 1}"#],
    );
    check(json!({"additionalProperties": false, "minProperties": 1}), &["1", "[]"], &["{}"]);
}

#[test]
fn negations() {
    check(json!({"not": {"not": {"type": "string"}}}), &[r#""x""#], &["1", "null"]);
    check(
        json!({"not": {"anyOf": [{"type": "string"}, {"type": "null", "description": "n"}]}}),
        &["1", "[]"],
        &[r#""x""#, "null"],
    );
    check(
        json!({"$defs": {"s": {"type": "string"}}, "not": {"$ref": "#/$defs/s"}}),
        &["1"],
        &[r#""x""#],
    );
    // Any pattern: its automaton complemented.
    check(
        json!({"not": {"pattern": "ab"}}),
        &[r#""ba""#, r#""a\nb""#],
        &[r#""xaby""#, r#""ab""#, "1"],
    );
}

#[test]
fn double_negation_passes_no_annotations() {
    check(
        json!({"properties": {"foo": {"type": "string"}}, "not": {"not": {"properties": {"bar": {"const": "bar"}}, "required": ["bar"]}}, "unevaluatedProperties": false}),
        &["1"],
        &[r#"{"foo": "foo", "bar": "bar"}"#],
    );
}

#[test]
fn deep_ref_chains_are_bounded() {
    // 1,900 definitions each referring to the next: fine at max_depth 2000
    // (on the compiler's own stack), a clear error at the default 128.
    let mut defs = serde_json::Map::new();
    for i in 0..1900 {
        defs.insert(format!("d{i}"), json!({"$ref": format!("#/$defs/d{}", i + 1)}));
    }
    defs.insert("d1900".into(), json!({"type": "integer"}));
    let s = json!({"$defs": defs, "$ref": "#/$defs/d0"});
    let deep = Options {
        max_depth: 2000,
        ..Options::default()
    };
    let g = CompiledGrammar::new(&compile(&s, &deep).unwrap().grammar, &GrammarLimits::default()).unwrap();
    assert!(accepts(&g, "7") && !accepts(&g, "\"x\""));
    assert!(compile(&s, &Options::default()).unwrap_err().to_string().contains("max_depth"));
    assert!(compile(
        &s,
        &Options {
            max_depth: 1_000_000,
            ..Options::default()
        }
    )
    .is_err());
}

#[test]
fn the_callers_stack_is_tried_first_and_a_thread_is_the_fallback() {
    // The 1,900-level chain above, compiled three ways: straight on a
    // thread (budget 0 fails the first check), inline until a 16 KB budget
    // runs out and then on a thread, and with the default budget. Same
    // grammar each time.
    let mut defs = serde_json::Map::new();
    for i in 0..1900 {
        defs.insert(format!("d{i}"), json!({"$ref": format!("#/$defs/d{}", i + 1)}));
    }
    defs.insert("d1900".into(), json!({"type": "integer", "minimum": 3}));
    let s = json!({"$defs": defs, "$ref": "#/$defs/d0"});
    let deep = Options {
        max_depth: 2000,
        ..Options::default()
    };
    let dbg = |budget: usize| format!("{:?}", compile_with_budget(&s, &deep, budget).unwrap().grammar);
    let reference = dbg(0);
    assert_eq!(dbg(16 << 10), reference);
    assert_eq!(dbg(INLINE_STACK_BUDGET), reference);

    // The check itself: a small budget is exhausted by the chain (and the
    // run is void), the default budget holds a shallow schema.
    let floor = stack::floor_for(16 << 10).expect("the test thread's stack extent is known");
    let mut c = compile::Compiler::new(&s, &deep).with_stack_floor(floor);
    let _ = c.run_in_place();
    assert!(c.out_of_stack);
    // (On a thread with a main thread's 8 MB: the test harness's 2 MB
    // threads are too short to try inline with the default budget.)
    std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(|| {
            let shallow = json!({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}}}});
            let opts = Options::default();
            let floor = stack::floor_for(INLINE_STACK_BUDGET).unwrap();
            let mut c = compile::Compiler::new(&shallow, &opts).with_stack_floor(floor);
            assert!(c.run_in_place().is_ok() && !c.out_of_stack);
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn a_thread_short_of_stack_parses_on_the_compilers() {
    // JSON nested 120 deep (serde_json allows 128) on a 64 KB thread: the
    // parse, the compile and the drop all go to the compiler's thread.
    let text = format!(r#"{{"const": {}0{}}}"#, "[".repeat(120), "]".repeat(120));
    let c = std::thread::Builder::new()
        .stack_size(64 << 10)
        .spawn(move || compile_str(&text, &Options::default()).map(|c| c.grammar.terminals.len()))
        .unwrap()
        .join()
        .unwrap();
    assert!(c.unwrap() > 0);
}

#[test]
fn negated_assertions_hold_on_their_own_type_only() {
    check(json!({"not": {"minimum": 3}}), &["2", "2.5", "-7"], &["3", "3.0", "4", r#""x""#, "null"]);
    check(json!({"not": {"maxLength": 2}}), &[r#""abc""#], &[r#""ab""#, "1", "null", "[]"]);
    // Every non-array satisfies minItems, so its negation rejects them.
    check(json!({"not": {"minItems": 2}}), &["[1]", "[]"], &["[1, 2]", r#""x""#, "{}", "1"]);
    check(json!({"not": {"exclusiveMaximum": 5}}), &["5", "6.5"], &["4.9", "true"]);
    check(
        json!({"not": {"maximum": 5, "exclusiveMaximum": true}, "type": "integer"}),
        &["5", "6"],
        &["4"],
    );
}

#[test]
fn negated_enums_exclude_scalars() {
    check(
        json!({"type": "integer", "not": {"enum": [1, 3]}}),
        &["0", "2", "4", "-1", "30"],
        &["1", "3", "1.0", "3.00"],
    );
    check(
        json!({"type": "number", "minimum": 0, "maximum": 2, "not": {"const": 1.5}}),
        &["0", "1.25", "1.55", "2"],
        &["1.5", "1.50", "2.5"],
    );
    check(
        json!({"type": "string", "not": {"const": "x"}}),
        &[r#""""#, r#""y""#, r#""xx""#],
        &[r#""x""#],
    );
    check(
        json!({"enum": ["a", "b", 1, null], "not": {"enum": ["a", null]}}),
        &[r#""b""#, "1"],
        &[r#""a""#, "null"],
    );
    check(json!({"not": {"enum": [true, null]}}), &["false", "0", r#""""#], &["true", "null"]);
    // A string pattern that cannot produce the excluded value needs no
    // complement.
    check(
        json!({"type": "string", "pattern": "^[0-9]+$", "not": {"const": "x"}}),
        &[r#""12""#],
        &[r#""x""#],
    );
    assert!(compile(&json!({"not": {"const": [1]}}), &Options::default()).is_err());
}

#[test]
fn negated_required_forbids_names() {
    let s = json!({"properties": {"a": {}, "b": {}}, "not": {"required": ["a", "b"]}});
    check(s, &["{}", r#"{"a": 1}"#, r#"{"b": 1}"#], &[r#"{"a": 1, "b": 2}"#, "1"]);
    let s = json!({"not": {"allOf": [{"required": ["a"]}, {"required": ["b"]}]}});
    check(s, &["{}", r#"{"a": 1}"#, r#"{"c": 1}"#], &[r#"{"a": 1, "b": 2}"#]);
    // Forbidden names are no extra keys either.
    let s = json!({"type": "object", "not": {"required": ["x"]}});
    check(s, &["{}", r#"{"y": 1}"#], &[r#"{"x": 1}"#, r#"{"y": 1, "x": 2}"#]);
}

#[test]
fn negated_properties_need_a_failing_value() {
    let s = json!({"not": {"properties": {"a": {"type": "string"}}}});
    check(s, &[r#"{"a": 1}"#, r#"{"a": null, "b": 2}"#], &["{}", r#"{"a": "x"}"#, "1", r#""s""#]);
}

#[test]
fn negated_one_of_is_none_or_several() {
    let s = json!({"not": {"oneOf": [{"type": "string"}, {"maxLength": 2}]}});
    check(s, &[r#""ab""#, r#""""#], &[r#""abc""#, "1", "null"]);
    let s = json!({"not": {"oneOf": [{"type": "integer"}, {"type": "number"}, {"type": "string"}]}});
    check(s, &["1", "null"], &["1.5", r#""x""#]);
}

#[test]
fn overlapping_one_of_branches_exclude_each_other() {
    let s = json!({"properties": {"a": {}, "b": {}}, "oneOf": [{"required": ["a"]}, {"required": ["b"]}]});
    check(s, &[r#"{"a": 1}"#, r#"{"b": 1}"#], &["{}", r#"{"a": 1, "b": 1}"#, "1"]);
    let s = json!({"oneOf": [{"maximum": 2}, {"maximum": 5}]});
    check(s, &["3", "5", "4.5"], &["1", "2", "6", r#""x""#]);
    let s = json!({"oneOf": [{"type": "string"}, {"maxLength": 2}]});
    check(s, &[r#""abc""#, "1"], &[r#""ab""#]);
    // Only the pairs that may overlap exclude each other.
    // (Branch 0 has no negation but needs none.)
    let s = json!({"oneOf": [{"type": "string", "pattern": "a.*b"}, {"type": "integer"}, {"type": "integer", "maximum": 5}]});
    check(s, &[r#""xaxb""#, "6", "70"], &["5", "-1", "2.5", "null", r#""b""#]);
    // Overlapping patterns: each branch less the other's language.
    check(
        json!({"oneOf": [{"pattern": "a"}, {"pattern": "b"}]}),
        &[r#""xa""#, r#""b""#],
        &[r#""ab""#, r#""c""#, "1"],
    );
    // A format branch: its negation is the format's complement.
    let s = json!({"oneOf": [{"format": "ipv4"}, {"pattern": "^1"}]});
    check(s, &[r#""2.0.0.1""#, r#""1x""#], &[r#""1.2.3.4""#, r#""x""#]);
}

#[test]
fn dependencies_split_on_the_trigger() {
    let s = json!({"properties": {"a": {}, "b": {}, "c": {}}, "dependentRequired": {"a": ["c"]}});
    check(
        s,
        &[
            "{}",
            r#"{"b": 1}"#,
            r#"{"a": 1, "c": 2}"#,
            r#"{"a": 1, "b": 2, "c": 3}"#,
            r#"{"c": 1}"#,
            "[]",
        ],
        &[r#"{"a": 1}"#, r#"{"a": 1, "b": 2}"#],
    );
    // A dependent listed before its trigger.
    let s = json!({"properties": {"b": {}, "a": {}}, "dependencies": {"a": ["b"], "x": "b"}});
    check(
        s,
        &[r#"{"b": 1, "a": 2}"#, r#"{"b": 1, "x": 2}"#, r#"{"b": 1}"#],
        &[r#"{"a": 1}"#, r#"{"x": 1}"#],
    );
    let s = json!({"properties": {"a": {}, "b": {"type": "integer"}}, "dependentSchemas": {"a": {"required": ["b"], "properties": {"b": {"minimum": 5}}}}});
    check(
        s,
        &[r#"{"b": 1}"#, r#"{"a": 1, "b": 5}"#, "1"],
        &[r#"{"a": 1}"#, r#"{"a": 1, "b": 4}"#, r#"{"b": "x"}"#],
    );
    let s = json!({"properties": {"a": {}}, "dependencies": {"a": false}});
    check(s, &["{}", "1"], &[r#"{"a": 1}"#]);
}

#[test]
fn additional_properties_beside_one_pattern() {
    let s = json!({"properties": {"id": {"type": "string"}}, "patternProperties": {"^x-": {"type": "integer"}}, "additionalProperties": {"type": "boolean"}});
    check(
        s,
        &[r#"{"id": "a", "x-a": 1, "y": true}"#, r#"{"x-": 2}"#, r#"{"x": true}"#, r#"{"": false}"#],
        &[r#"{"x-a": true}"#, r#"{"y": 1}"#, r#"{"id": true}"#, r#"{"xy": 1}"#],
    );
    let s = json!({"type": "object", "patternProperties": {"^[a-z_]+$": {"type": "integer"}}});
    check(
        s,
        &[r#"{"ab": 1}"#, r#"{"Ab": "s"}"#, r#"{"": "s"}"#, r#"{"a1": null}"#],
        &[r#"{"ab": "s"}"#, r#"{"a_": null}"#],
    );
    let s = json!({"type": "object", "patternProperties": {"\\w+": {"type": "integer"}}, "additionalProperties": {"type": "string"}});
    check(s, &[r#"{"a-": 1}"#, r#"{"-": "s"}"#, r#"{"": "s"}"#], &[r#"{"-": 1}"#, r#"{"a": "s"}"#]);
    let s = json!({"type": "object", "patternProperties": {"^[0-9]{2,3}$": {"type": "integer"}}, "additionalProperties": {"type": "string"}});
    check(
        s,
        &[r#"{"12": 1}"#, r#"{"123": 1}"#, r#"{"1": "s"}"#, r#"{"1234": "s"}"#, r#"{"1a": "s"}"#],
        &[r#"{"12": "s"}"#, r#"{"1": 1}"#, r#"{"1234": 1}"#],
    );
    // Other shapes are refused.
    assert!(compile(
        &json!({"patternProperties": {"^a+b": {}}, "additionalProperties": {"type": "string"}}),
        &Options::default()
    )
    .is_err());
}

#[test]
fn negated_additional_properties_need_a_witness() {
    let s = json!({"properties": {"a": {}, "b": {}, "c": {}}, "not": {"properties": {"a": {}}, "additionalProperties": false}});
    check(s, &[r#"{"b": 1}"#, r#"{"a": 1, "c": 2}"#, r#"{"z": 1}"#], &["{}", r#"{"a": 1}"#, "1"]);
    let s = json!({"properties": {"a": {}}, "not": {"additionalProperties": {"type": "integer"}}});
    check(
        s,
        &[r#"{"a": "x"}"#, r#"{"a": 1, "z": null}"#],
        &["{}", r#"{"a": 1}"#, r#"{"z": 2}"#, "[]"],
    );
    // The usual oneOf of closed objects with overlapping names.
    let s = json!({"oneOf": [
        {"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a"], "additionalProperties": false},
        {"type": "object", "properties": {"a": {}, "c": {}}, "required": ["a"], "additionalProperties": false}]});
    check(
        s,
        &[r#"{"a": 1, "b": 2}"#, r#"{"a": 1, "c": 2}"#],
        &[r#"{"a": 1}"#, r#"{"a": 1, "b": 2, "c": 3}"#, r#"{"b": 1}"#],
    );
    // Three closed branches: each member's key tells which others it breaks.
    let s = json!({"oneOf": [
        {"properties": {"a": {}, "b": {}}, "additionalProperties": false},
        {"properties": {"a": {}, "c": {}}, "additionalProperties": false},
        {"properties": {"d": {}}, "additionalProperties": false}]});
    check(
        s,
        &[r#"{"a": 1, "b": 2}"#, r#"{"c": 1}"#, r#"{"d": 1}"#],
        &["{}", r#"{"a": 1}"#, r#"{"a": 1, "b": 2, "c": 3}"#, r#"{"z": 1}"#, "1"],
    );
}

#[test]
fn negated_items_need_a_failing_item() {
    let s = json!({"not": {"items": {"type": "integer"}}});
    check(s, &[r#"[1, "x"]"#, "[null]"], &["[]", "[1, 2]", "1", "{}"]);
    assert!(compile(&json!({"not": {"prefixItems": [{}], "items": {"type": "integer"}}}), &Options::default()).is_err());
}

#[test]
fn negated_patterns_of_simple_shapes() {
    let s = json!({"not": {"pattern": "^[.,*\\s-]+$"}});
    check(s, &[r#""a""#, r#""""#, r#"".a""#], &[r#""..""#, r#""- *""#, "1"]);
    let s = json!({"type": "string", "not": {"pattern": "^x-"}, "not_a_keyword": 1});
    check(s, &[r#""x""#, r#""y-x""#], &[r#""x-""#, r#""x-y""#]);
    let s = json!({"type": "string", "not": {"anyOf": [{"pattern": "^x-"}, {"const": "a"}]}});
    check(s, &[r#""x""#, r#""b""#], &[r#""x-y""#, r#""a""#]);
    let s = json!({"type": "string", "minLength": 1, "not": {"pattern": "^[.*\\s-]+$"}});
    check(s, &[r#""a""#, r#"".a""#], &[r#""""#, r#""..""#, r#""- *""#]);
    // Beside a length bound, or another pattern: the automata combined.
    check(
        json!({"maxLength": 3, "not": {"pattern": "^a"}}),
        &[r#""ba""#, r#""""#],
        &[r#""ab""#, r#""bbbb""#],
    );
    let s = json!({"type": "string", "pattern": "^[a-z]+$", "not": {"anyOf": [{"pattern": "x"}, {"format": "date"}, {"enum": ["ab"]}]}});
    check(s, &[r#""abc""#, r#""a""#], &[r#""ab""#, r#""axb""#, r#""A""#]);
    let s = json!({"type": "string", "allOf": [{"pattern": "^a"}, {"pattern": "b$"}, {"format": "hostname"}], "minLength": 3});
    check(s, &[r#""a-b""#, r#""axxb""#], &[r#""ab""#, r#""a_b""#, r#""ba""#]);
}

#[test]
fn patterns_that_match_listed_names() {
    let s = json!({"properties": {"ab": {"type": "string"}}, "patternProperties": {"^a": {"minLength": 2}}, "additionalProperties": false});
    check(
        s,
        &[r#"{"ab": "xy", "ac": "zz"}"#, r#"{"a": "zz"}"#],
        &[
            r#"{"ab": "x"}"#,
            r#"{"ab": "xy", "ab": "zz"}"#,
            r#"{"ac": 1, "ab": "xy"}"#,
            r#"{"b": "zz"}"#,
        ],
    );
    // Non-ASCII names against \w: Python's re and ECMA-262 disagree.
    assert!(compile(
        &json!({"properties": {"é": {}}, "patternProperties": {"\\w": {}}, "additionalProperties": false}),
        &Options::default()
    )
    .is_err());
}

#[test]
fn empty_complements_leave_no_key() {
    // `^.*$` leaves only keys with line terminators to additionalProperties,
    // none of them within the complement's alphabet.
    check(
        json!({"type": "object", "patternProperties": {"^.*$": {"type": "integer"}}}),
        &[r#"{"a": 1}"#, "{}"],
        &[r#"{"a": "x"}"#],
    );
    let s = json!({"type": "object", "patternProperties": {"^[a-d]$": true}, "additionalProperties": false,
        "dependencies": {"b": {"not": {"required": ["a"]}}}, "required": ["d"]});
    // (Required and forbidden names are listed, before pattern keys.)
    check(
        s,
        &[r#"{"d": 2, "a": 1}"#, r#"{"b": 1, "d": 2}"#],
        &[r#"{"d": 3, "b": 2, "a": 1}"#, r#"{"d": 2, "e": 1}"#],
    );
}

#[test]
fn pattern_with_lengths_counted() {
    // Several variable parts: the automaton times a character counter.
    let s = json!({"type": "string", "pattern": "^([a-z0-9-]+):([a-z0-9.-]+):([a-z0-9-]+)?:([a-z0-9-]+)$", "maxLength": 8});
    check(s, &[r#""a:b::c""#, r#""a:.d:e:f""#], &[r#""abc:d.e:f:g""#, r#""a:b:c""#, r#""a:b::""#]);
    // Characters are counted once whatever their encoding.
    let s = json!({"type": "string", "pattern": "^[^:]+:[^:]+$", "minLength": 3, "maxLength": 4});
    check(
        s,
        &[r#""é:\n""#, r#""\"\\:a""#, r#""ab:c""#, r#""\\:\n""#],
        &[r#""a:""#, r#""ab:cd""#, r#""\\\\:\n\t""#, r#""\u0001:""#],
    );
    // A minimum only, and a format.
    let s = json!({"type": "string", "pattern": "x", "minLength": 3});
    check(s, &[r#""abx""#, r#""xxxxxxxx""#], &[r#""ax""#, r#""abc""#]);
    let s = json!({"type": "string", "format": "date-time", "maxLength": 22});
    check(
        s,
        &[r#""2020-01-01T00:00:00Z""#, r#""2020-01-01T00:00:00.5Z""#],
        &[r#""2020-01-01T00:00:00.55Z""#],
    );
    // An enum member is tested against the same language.
    let s = json!({"enum": ["a:b::c", "abcd:e:f:g", 1], "pattern": "^([a-z]+):([a-z]+):([a-z]+)?:([a-z]+)$", "maxLength": 8});
    check(s, &[r#""a:b::c""#, "1"], &[r#""abcd:e:f:g""#]);
    // No string fits: an empty language, not a grammar error.
    assert!(compile(&json!({"type": "string", "pattern": "^a+:b+$", "maxLength": 2}), &Options::default()).is_err());
    // Past the pair limit: refused by keyword.
    let e = compile(&json!({"type": "string", "format": "email", "maxLength": 100000}), &Options::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("maxLength"), "{e}");
}

#[test]
fn anchors_inside_a_pattern() {
    let s = json!({"type": "string", "pattern": "^(/?((\\.{2})|([a-z0-9-]*))($|/))*$"});
    check(s, &[r#""""#, r#""a/b""#, r#""/../x/""#], &[r#""A""#, r#""a//b.""#]);
    let s = json!({"type": "string", "pattern": "^(\\d+)?$|^$", "maxLength": 3});
    check(s, &[r#""""#, r#""123""#], &[r#""1234""#, r#""a""#]);
}

#[test]
fn structured_enums_keep_the_members_that_validate() {
    let s = json!({"enum": [{"a": 1}, {"a": "x"}, [1, 2], [1]], "properties": {"a": {"type": "integer"}}, "minItems": 2});
    check(s, &[r#"{"a": 1}"#, "[1, 2]"], &[r#"{"a": "x"}"#, "[1]"]);
    let s = json!({"allOf": [{"const": {"foo": 1}}, {"not": {"required": ["foo"]}}]});
    assert!(compile(&s, &Options::default()).is_err());
    let s = json!({"const": [1, 2], "items": {"type": "integer"}, "uniqueItems": false, "contains": {"const": 2}});
    check(s, &["[1, 2]"], &["[1]", "[2, 1]"]);
    // What the validator cannot decide is still refused.
    let s = json!({"enum": [{"a": 1}], "properties": {"a": true}, "unevaluatedProperties": false});
    let e = compile(&s, &Options::default()).unwrap_err().to_string();
    assert!(e.contains("enum"), "{e}");
}

#[test]
fn conditionals() {
    let s = json!({"type": "object", "properties": {"kind": {"type": "string"}, "n": {}}, "if": {"properties": {"kind": {"const": "int"}}}, "then": {"properties": {"n": {"type": "integer"}}}, "else": {"properties": {"n": {"type": "string"}}}});
    check(
        s,
        &[r#"{"kind": "int", "n": 1}"#, r#"{"kind": "str", "n": "x"}"#, r#"{"n": 1}"#],
        &[r#"{"kind": "int", "n": "x"}"#, r#"{"kind": "str", "n": 1}"#, r#"{"n": "x"}"#],
    );
    // Only `then`: when `if` fails anything goes; and the negation.
    check(json!({"if": {"minimum": 10}, "then": {"maximum": 20}}), &["12", "3", r#""x""#], &["25"]);
    check(
        json!({"not": {"if": {"minimum": 10}, "then": {"maximum": 20}}}),
        &["25"],
        &["12", "3", r#""x""#],
    );
    check(
        json!({"not": {"if": {"type": "string"}, "else": {"type": "null"}}}),
        &["1", "true"],
        &["null", r#""x""#],
    );
}

#[test]
fn several_contains() {
    let s = json!({"allOf": [{"contains": {"type": "string"}}, {"contains": {"type": "number", "minimum": 5}}]});
    check(s, &[r#"["a", 7]"#, r#"[7, 1, "a"]"#], &["[7]", r#"["a"]"#, "[]", "[1, 2]"]);
    // One item may satisfy both.
    let s = json!({"allOf": [{"contains": {"minimum": 5}}, {"contains": {"maximum": 5}}], "maxItems": 1});
    check(s, &["[5]"], &["[6]", "[4]", "[4, 6]"]);
}

#[test]
fn negated_patterns_where_python_reads_otherwise() {
    // Python's `\w` matches `é`: a string with it must not count as failing.
    let s = json!({"type": "string", "not": {"pattern": "^\\w+$"}, "maxLength": 4});
    check(s, &[r#""a b""#, r#""-""#], &[r#""ab""#, r#""é""#, r#""a b c""#]);
}

#[test]
fn one_of_told_apart_by_patterns() {
    // Branches whose required `id` patterns share no string: disjoint, no
    // negation needed (the `not` of the `format: regex` branch has none).
    let s = json!({"oneOf": [
        {"type": "object", "properties": {"id": {"type": "string", "pattern": "^pkg:a/"}, "x": {"format": "regex"}}, "required": ["id"]},
        {"type": "object", "properties": {"id": {"type": "string", "pattern": "^pkg:b/"}}, "required": ["id"]}
    ]});
    let c = compile(
        &s,
        &Options {
            strict: false,
            ..Options::default()
        },
    )
    .unwrap();
    assert!(c.warnings.iter().all(|w| !w.contains("keyword \"oneOf\"")), "{:?}", c.warnings);
    let s = json!({"oneOf": [
        {"properties": {"id": {"type": "string", "pattern": "^a"}}, "required": ["id"]},
        {"properties": {"id": {"type": "string", "pattern": "^b"}}, "required": ["id"]}
    ]});
    check(s, &[r#"{"id": "ax"}"#, r#"{"id": "b"}"#], &[r#"{"id": "c"}"#, r#"{}"#]);
}

#[test]
fn excluded_arrays_and_objects() {
    // Inside a finite enum: the excluded members are dropped.
    check(
        json!({"allOf": [{"enum": [[0], [1], {"a": 1}]}, {"not": {"enum": [[1], {"a": 1}]}}]}),
        &["[0]"],
        &["[1]", r#"{"a": 1}"#],
    );
    // Elsewhere: refused, not ignored.
    let e = compile(&json!({"type": "array", "not": {"const": [1]}}), &Options::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("not"), "{e}");
    check(json!({"type": "string", "not": {"const": [1]}}), &[r#""x""#], &["[1]"]);
}

/// A schema whose lexer outgrows its bound with a larger lexer count
/// (MaskBench's Github_hard---o21072, from ../shared: patterned strings
/// beside long ones) compiles with the smaller one, and the matcher takes
/// that road by itself.
#[test]
fn a_lexer_too_large_is_compiled_again_smaller() {
    let path = format!("{}/../shared/maskbench-dev/Github_hard---o21072.json", env!("CARGO_MANIFEST_DIR"));
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("skipping: {path} not found");
        return;
    };
    let d: Value = serde_json::from_str(&text).unwrap();
    let schema = &d["schema"];
    let limits = GrammarLimits::default();
    let large = Options {
        lexer_count: 1024,
        ..Options::default()
    };
    let c = compile(schema, &large).unwrap();
    assert!(c.lexer_counts);
    let e = CompiledGrammar::new(&c.grammar, &limits).unwrap_err();
    assert!(matches!(e, Error::TooLarge(_)), "{e}");
    let smaller = large.smaller_lexer().unwrap();
    assert_eq!((smaller.lexer_count, smaller.string_heads), (MIN_LEXER_COUNT, true));
    let g = CompiledGrammar::new(&compile(schema, &smaller).unwrap().grammar, &limits).unwrap();
    let mut valid = 0;
    for t in d["tests"].as_array().unwrap() {
        if t["valid"].as_bool() == Some(true) {
            let text = serde_json::to_string(&t["data"]).unwrap();
            assert!(accepts(&g, &text), "{text}");
            valid += 1;
        }
    }
    assert!(valid > 0);
    let Some(env) = crate::grammar::mask::tests::load_env("gpt2") else {
        return;
    };
    crate::matcher::Constraint::json_schema(env, &schema.to_string(), &large, &limits).unwrap();
    for n in [0, 31, 1025] {
        let e = compile(
            schema,
            &Options {
                lexer_count: n,
                ..Options::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("lexer_count"), "{e}");
    }
    // The ladder ends: no heads after the smallest count, then nothing.
    let last = smaller.smaller_lexer().unwrap();
    assert!(!last.string_heads && last.smaller_lexer().is_none());
}
