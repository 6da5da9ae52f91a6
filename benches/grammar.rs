//! Criterion benchmarks of the grammar engine: compiling grammars, and
//! masks along JSON documents (first pass: caches cold; second pass: warm),
//! and the Earley parser alone (bytes pushed through lexer + parser).
//!
//! Run with `cargo bench --bench grammar`. Uses the Llama 3 tokenizer from
//! `../shared/tokenizers/llama-3-8b-instruct/tokenizer.json`; skips with a
//! message when it is missing.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokensieve::grammar::earley::{CompiledGrammar, GrammarState};
use tokensieve::grammar::json::{json_grammar, Whitespace};
use tokensieve::grammar::{lark, GrammarLimits};
use tokensieve::matcher::{Constraint, Matcher, TokEnv};
use tokensieve::vocab::Vocabulary;

const DOCS: &[&str] = &[
    r#"{"name": "deleteByQuery", "args": {"index": "logs-2024", "query": {"match": {"level": "error"}}, "size": 100}}"#,
    r#"[{"id": 1, "tags": ["a", "b"], "score": 0.5}, {"id": 2, "tags": [], "score": -1.25e3}, {"id": 3, "ok": true}]"#,
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env() -> Option<Arc<TokEnv>> {
    let p = root().join("../shared/tokenizers/llama-3-8b-instruct/tokenizer.json");
    let json = std::fs::read_to_string(&p)
        .map_err(|_| eprintln!("skipping grammar benches: {} not found", p.display()))
        .ok()?;
    let env = TokEnv::new(Vocabulary::from_tokenizer_json(&json, None, None).unwrap());
    env.trie();
    env.shapes();
    Some(env)
}

/// Greedy longest-prefix split of `doc` over the vocabulary (a valid, BPE-like token sequence).
fn tokens(env: &TokEnv, doc: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < doc.len() {
        let (t, len, _) = env.trie().longest_prefix(&doc.as_bytes()[pos..]).unwrap();
        out.push(t);
        pos += len;
    }
    out
}

fn benches(c: &mut Criterion) {
    let Some(env) = env() else { return };
    let lark_json = std::fs::read_to_string(root().join("tests/grammars/json.lark")).unwrap();
    let limits = GrammarLimits::default();

    let mut g = c.benchmark_group("grammar_compile");
    g.bench_function("json_builtin", |b| {
        b.iter(|| Constraint::grammar(env.clone(), &json_grammar(Whitespace::Flexible, 64).unwrap(), &limits).unwrap())
    });
    g.bench_function("json_lark", |b| {
        b.iter(|| Constraint::grammar(env.clone(), &lark::parse_lark(&lark_json, &limits).unwrap(), &limits).unwrap())
    });
    g.bench_function("json_builtin_plus_first_mask", |b| {
        let mut mask = vec![0u32; env.mask_words()];
        b.iter(|| {
            let c = Constraint::grammar(env.clone(), &json_grammar(Whitespace::Flexible, 64).unwrap(), &limits).unwrap();
            Matcher::new(c).fill_mask(&mut mask).unwrap();
        })
    });
    g.finish();

    let mut g = c.benchmark_group("grammar_mask_per_token");
    g.measurement_time(Duration::from_secs(4)).sample_size(20);
    for (name, grammar) in [
        ("json_builtin", json_grammar(Whitespace::Flexible, 64).unwrap()),
        ("json_lark", lark::parse_lark(&lark_json, &limits).unwrap()),
    ] {
        for (d, doc) in DOCS.iter().enumerate() {
            let toks = tokens(&env, doc);
            g.throughput(Throughput::Elements(toks.len() as u64));
            // Cold: a fresh constraint (empty caches) per iteration, compile excluded.
            g.bench_function(format!("{name}/doc{d}/cold"), |b| {
                let mut mask = vec![0u32; env.mask_words()];
                b.iter_batched(
                    || Matcher::new(Constraint::grammar(env.clone(), &grammar, &limits).unwrap()),
                    |mut m| {
                        for &t in &toks {
                            m.fill_mask(&mut mask).unwrap();
                            assert!(m.consume_token(t).unwrap());
                        }
                        black_box(&mask);
                    },
                    BatchSize::SmallInput,
                )
            });
            // Warm: the same constraint, caches filled by earlier passes.
            let c = Constraint::grammar(env.clone(), &grammar, &limits).unwrap();
            g.bench_function(format!("{name}/doc{d}/warm"), |b| {
                let mut mask = vec![0u32; env.mask_words()];
                b.iter(|| {
                    let mut m = Matcher::new(c.clone());
                    for &t in &toks {
                        m.fill_mask(&mut mask).unwrap();
                        assert!(m.consume_token(t).unwrap());
                    }
                    black_box(&mask);
                })
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("earley_bytes");
    let cg = CompiledGrammar::new(&json_grammar(Whitespace::Flexible, 64).unwrap(), &limits).unwrap();
    for (d, doc) in DOCS.iter().enumerate() {
        g.throughput(Throughput::Bytes(doc.len() as u64));
        g.bench_function(format!("json_builtin/doc{d}"), |b| {
            b.iter(|| {
                let mut st = GrammarState::new(&cg).unwrap();
                for &byte in doc.as_bytes() {
                    assert!(st.push_byte(&cg, byte));
                }
                assert!(st.is_accepting(&cg));
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = grammar;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(20);
    targets = benches
}
criterion_main!(grammar);
