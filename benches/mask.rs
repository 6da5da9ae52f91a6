//! Criterion benchmarks of the Rust core: token-trie build, regex compile,
//! warm (cached) and cold (uncached trie walk) masks, and token consumption.
//!
//! Run with `cargo bench --bench mask` (add a filter such as
//! `cargo bench --bench mask -- mask_cold` to run one group).
//!
//! Tokenizers are read from `../shared/tokenizers/<name>/tokenizer.json`
//! relative to the crate root; a missing file skips the benchmarks that need
//! it with a message instead of failing.
//!
//! Token sequences are produced without a BPE tokenizer: a greedy
//! longest-prefix split of a matching string over the vocabulary's bytes.
//! That is not the canonical tokenization, but it is a valid token sequence
//! for the constraint (tokensieve works on bytes), with BPE-like token
//! lengths, which is all a mask benchmark needs. `benches/compare_regex.py`
//! uses the real tokenizer.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokensieve::matcher::{Constraint, Matcher, TokEnv};
use tokensieve::regex::{Dfa, DfaWalker, RegexLimits};
use tokensieve::toktrie::{Recognizer, TokTrie};
use tokensieve::vocab::Vocabulary;

/// (name, pattern, a string the pattern matches in full). Kept in sync with
/// `benches/compare_regex.py`.
const REGEXES: &[(&str, &str, &str)] = &[
    ("iso_date", r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])", "2024-02-29"),
    ("email", r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}", "jane.doe+news@mail.example.com"),
    ("phone", r"\+?1? ?\(?[0-9]{3}\)?[ .-]?[0-9]{3}[ .-]?[0-9]{4}", "+1 (555) 123-4567"),
    (
        "ipv4",
        r"((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])",
        "192.168.100.254",
    ),
    ("number", r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?", "-12345.678e-9"),
    ("json_obj", r#"\{"name": "[a-zA-Z ]{1,20}", "age": [0-9]{1,3}\}"#, r#"{"name": "Ada Lovelace", "age": 36}"#),
    ("uuid", r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "123e4567-e89b-12d3-a456-426614174000"),
    (
        "words50",
        "(apple|banana|cherry|date|elderberry|fig|grape|honeydew|kiwi|lemon|mango|nectarine|orange|papaya|quince|raspberry|strawberry|tangerine|ugli|vanilla|watermelon|xigua|yam|zucchini|apricot|blueberry|cantaloupe|dragonfruit|eggplant|feijoa|guava|huckleberry|jackfruit|kumquat|lime|mulberry|nutmeg|olive|peach|pear|plum|pineapple|pomegranate|radish|spinach|tomato|turnip|walnut|almond|cashew)",
        "pomegranate",
    ),
    ("free_text", r"[a-z]+( [a-z]+)*", "the quick brown fox jumps over the lazy dog"),
    (
        "url",
        r"https?://[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)+(:[0-9]{1,5})?(/[a-zA-Z0-9._~%-]*)*(\?[a-zA-Z0-9._~%=&-]*)?",
        "https://www.example.com:8080/path/to/page.html?query=1&lang=en",
    ),
];

fn tokenizer_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("shared")
        .join("tokenizers")
        .join(name)
        .join("tokenizer.json")
}

fn load_vocab(name: &str) -> Option<Vocabulary> {
    let path = tokenizer_path(name);
    match std::fs::read_to_string(&path) {
        Ok(json) => match Vocabulary::from_tokenizer_json(&json, None, None) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("skipping {name} benchmarks: cannot parse {}: {e}", path.display());
                None
            }
        },
        Err(e) => {
            eprintln!("skipping {name} benchmarks: {} not found ({e})", path.display());
            None
        }
    }
}

/// Greedy longest-prefix split of `text` into non-special tokens.
fn greedy_tokenize(vocab: &Vocabulary, text: &str) -> Vec<u32> {
    let mut by_bytes: HashMap<&[u8], u32> = HashMap::new();
    let mut max_len = 0;
    for t in 0..vocab.size() as u32 {
        let b = vocab.token_bytes(t);
        if !vocab.is_special(t) && !b.is_empty() {
            by_bytes.entry(b).or_insert(t);
            max_len = max_len.max(b.len());
        }
    }
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let tok = (1..=max_len.min(bytes.len() - i))
            .rev()
            .find_map(|l| by_bytes.get(&bytes[i..i + l]).copied())
            .unwrap_or_else(|| panic!("no token covers byte {i} of {text:?}"));
        i += vocab.token_bytes(tok).len();
        out.push(tok);
    }
    out
}

struct Case {
    name: &'static str,
    pattern: &'static str,
    tokens: Vec<u32>,
}

/// The Llama 3 environment and each regex with its token sequence, checked
/// to be accepted by the constraint.
fn llama3_cases() -> Option<(Arc<TokEnv>, Vec<Case>)> {
    let vocab = load_vocab("llama-3-8b-instruct")?;
    let env = TokEnv::new(vocab);
    env.trie();
    let limits = RegexLimits::default();
    let cases = REGEXES
        .iter()
        .map(|&(name, pattern, text)| {
            let tokens = greedy_tokenize(env.vocab(), text);
            let c = Constraint::regex(env.clone(), pattern, &limits).expect(name);
            let mut m = Matcher::new(c);
            assert_eq!(m.consume_tokens(&tokens).unwrap(), tokens.len(), "{name}: sequence rejected");
            assert!(m.is_accepting(), "{name}: sequence does not complete a match");
            Case { name, pattern, tokens }
        })
        .collect();
    Some((env, cases))
}

/// Counts the trie nodes a walk tries (the unit of work of a cold mask).
struct Counting<R> {
    inner: R,
    tried: u64,
}

impl<R: Recognizer> Recognizer for Counting<R> {
    fn try_push_byte(&mut self, b: u8) -> bool {
        self.tried += 1;
        self.inner.try_push_byte(b)
    }
    fn pop_bytes(&mut self, n: usize) {
        self.inner.pop_bytes(n)
    }
}

/// DFA states visited along a token sequence (before each token).
fn states_along(dfa: &Dfa, vocab: &Vocabulary, tokens: &[u32]) -> Vec<u32> {
    let mut states = vec![dfa.start()];
    for &t in &tokens[..tokens.len() - 1] {
        states.push(dfa.run(*states.last().unwrap(), vocab.token_bytes(t)));
    }
    states
}

/// Print how much work the uncached walks do: the cost of a cold mask is
/// roughly proportional to the trie nodes tried.
fn print_walk_stats(env: &TokEnv, cases: &[Case]) {
    let trie = env.trie();
    eprintln!("token trie: {} nodes; per regex, over the states along its sequence:", trie.num_nodes());
    for case in cases {
        let dfa = Dfa::compile(case.pattern, &RegexLimits::default()).unwrap();
        let (mut max_allowed, mut max_tried, mut sum_tried) = (0u32, 0u64, 0u64);
        let states = states_along(&dfa, env.vocab(), &case.tokens);
        for &s in &states {
            let mut mask = vec![0u32; env.mask_words()];
            let mut w = Counting {
                inner: DfaWalker::new(&dfa, s, trie.max_depth()),
                tried: 0,
            };
            trie.add_allowed(&mut w, &mut mask);
            max_allowed = max_allowed.max(mask.iter().map(|x| x.count_ones()).sum());
            max_tried = max_tried.max(w.tried);
            sum_tried += w.tried;
        }
        eprintln!(
            "  {:<10} {:>3} DFA states, {:>2} states on the path: max allowed tokens {:>6}, trie nodes tried max {:>6} / mean {:>6}",
            case.name,
            dfa.num_states(),
            states.len(),
            max_allowed,
            max_tried,
            sum_tried / states.len() as u64
        );
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args()
}

fn bench_trie_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("trie_build");
    g.measurement_time(Duration::from_secs(3));
    for name in ["llama-3-8b-instruct", "qwen3"] {
        let Some(vocab) = load_vocab(name) else {
            continue;
        };
        g.bench_function(name, |b| b.iter(|| black_box(TokTrie::new(black_box(&vocab)))));
    }
    g.finish();
}

fn bench_core(c: &mut Criterion) {
    let Some((env, cases)) = llama3_cases() else {
        return;
    };
    let limits = RegexLimits::default();
    let words = env.mask_words();
    print_walk_stats(&env, &cases);

    // Regex -> constraint (the trie is already built and shared).
    let mut g = c.benchmark_group("compile");
    for case in &cases {
        g.bench_function(case.name, |b| {
            b.iter(|| black_box(Constraint::regex(env.clone(), black_box(case.pattern), &limits).unwrap()))
        });
    }
    g.finish();

    // Mask of a state seen before: a cache hit (copy of one mask row).
    let mut g = c.benchmark_group("mask_warm");
    for case in &cases {
        let con = Constraint::regex(env.clone(), case.pattern, &limits).unwrap();
        let mut m = Matcher::new(con);
        let mut mask = vec![0u32; words];
        m.fill_mask(&mut mask).unwrap();
        g.bench_function(case.name, |b| b.iter(|| m.fill_mask(black_box(&mut mask)).unwrap()));
    }
    g.finish();

    // First mask of the start state, through the public API: a freshly
    // compiled constraint per iteration (compiled in setup, not timed).
    // Setup (a compile per iteration) can cost far more than the timed
    // routine here, so keep the timed budget short.
    let mut g = c.benchmark_group("mask_cold_start");
    g.warm_up_time(Duration::from_millis(100)).measurement_time(Duration::from_millis(300));
    for case in &cases {
        let mut mask = vec![0u32; words];
        g.bench_function(case.name, |b| {
            b.iter_batched(
                || Matcher::new(Constraint::regex(env.clone(), case.pattern, &limits).unwrap()),
                |mut m| {
                    m.fill_mask(&mut mask).unwrap();
                    m // dropped outside the timed region
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    // One pass along the token sequence with a fresh constraint (empty
    // cache) per iteration, per token: the first pass of a generation. A
    // state that repeats on the path is a cache hit after its first visit
    // (`trie_walk_seq` below walks every state). Includes the (negligible)
    // consume_token calls between masks.
    let mut g = c.benchmark_group("mask_cold_seq");
    g.warm_up_time(Duration::from_millis(100)).measurement_time(Duration::from_millis(500));
    for case in &cases {
        let mut mask = vec![0u32; words];
        g.throughput(Throughput::Elements(case.tokens.len() as u64));
        g.bench_function(case.name, |b| {
            b.iter_batched(
                || Matcher::new(Constraint::regex(env.clone(), case.pattern, &limits).unwrap()),
                |mut m| {
                    for &t in &case.tokens {
                        m.fill_mask(&mut mask).unwrap();
                        m.consume_token(t).unwrap();
                    }
                    m
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    // The uncached trie walk alone (what a cache miss costs, minus storing
    // the row), on the same DFA every iteration: per token of the sequence.
    let mut g = c.benchmark_group("trie_walk_seq");
    let trie = env.trie();
    for case in &cases {
        let dfa = Dfa::compile(case.pattern, &limits).unwrap();
        let states = states_along(&dfa, env.vocab(), &case.tokens);
        let mut mask = vec![0u32; words];
        g.throughput(Throughput::Elements(states.len() as u64));
        g.bench_function(case.name, |b| {
            b.iter(|| {
                for &s in &states {
                    mask.fill(0);
                    let mut w = DfaWalker::new(&dfa, s, trie.max_depth());
                    trie.add_allowed(&mut w, &mut mask);
                }
                black_box(&mask);
            })
        });
    }
    g.finish();

    // consume_token over the whole sequence, then rollback: per token.
    let mut g = c.benchmark_group("consume_token");
    for case in &cases {
        let con = Constraint::regex(env.clone(), case.pattern, &limits).unwrap();
        let mut m = Matcher::new(con);
        let n = case.tokens.len();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(case.name, |b| {
            b.iter(|| {
                for &t in &case.tokens {
                    black_box(m.consume_token(black_box(t)).unwrap());
                }
                m.rollback(n).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_trie_build, bench_core
}
criterion_main!(benches);
