//! What every metric reports, and how: a row of the table, one JSON line,
//! and whether its target is met.

use std::fmt::Write as _;

/// A metric's target.
#[derive(Clone, Copy)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
    Below(f64),
}

impl Target {
    fn met(self, v: f64) -> bool {
        match self {
            Target::AtLeast(t) => v >= t,
            Target::AtMost(t) => v <= t,
            Target::Below(t) => v < t,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::AtLeast(t) => write!(f, ">= {t}"),
            Target::AtMost(t) => write!(f, "<= {t}"),
            Target::Below(t) => write!(f, "< {t}"),
        }
    }
}

/// One metric's result.
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub target: Target,
    /// The figure, or why there is none.
    pub value: Result<f64, String>,
    /// Conditions besides the value that the target needs (p99 no worse,
    /// every child alive): each with whether it holds.
    pub also: Vec<(String, bool)>,
    /// The spread over rounds and what the figure is made of.
    pub detail: String,
}

impl Metric {
    pub fn new(name: &'static str, unit: &'static str, target: Target) -> Metric {
        Metric {
            name,
            unit,
            target,
            value: Err("not measured".into()),
            also: Vec::new(),
            detail: String::new(),
        }
    }

    pub fn skipped(mut self, why: impl Into<String>) -> Metric {
        self.value = Err(why.into());
        self
    }

    /// `met`, `NOT met` or `skipped`.
    pub fn verdict(&self) -> &'static str {
        match self.value {
            Err(_) => "skipped",
            Ok(v) if self.target.met(v) && self.also.iter().all(|(_, ok)| *ok) => "met",
            Ok(_) => "NOT met",
        }
    }

    fn shown(&self) -> String {
        match &self.value {
            Ok(v) => format!("{} {}", round(*v, self.unit), self.unit),
            Err(_) => "skipped".into(),
        }
    }

    /// `{"metric": "spawn", "value": 1.18, "unit": "ratio", "target": "<= 1.2"}`;
    /// a skipped metric's value is `null`.
    pub fn json(&self) -> String {
        let value = match &self.value {
            Ok(v) => round(*v, self.unit),
            Err(_) => "null".into(),
        };
        format!(
            "{{\"metric\": \"{}\", \"value\": {value}, \"unit\": \"{}\", \"target\": \"{}\"}}",
            self.name, self.unit, self.target
        )
    }

    /// Printed as soon as the metric is measured.
    pub fn print_now(&self) {
        match &self.value {
            Ok(_) => println!("==> {}: {} ({})", self.name, self.shown(), self.verdict()),
            Err(why) => println!("==> {}: skipped: {why}", self.name),
        }
        for (c, ok) in &self.also {
            println!("    {c}: {}", if *ok { "yes" } else { "NO" });
        }
        for line in self.detail.lines() {
            println!("    {line}");
        }
        println!();
    }
}

/// A ratio to three decimals, so that one printed as at its target is
/// never on the wrong side of it; amounts to one.
fn round(v: f64, unit: &str) -> String {
    let digits = if unit == "ratio" { 3 } else { 1 };
    format!("{v:.digits$}")
}

/// The table of every metric, then one JSON line each.
pub fn print_all(metrics: &[Metric]) {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<14} {:>14} {:>10}  {:<8} conditions / why skipped",
        "metric", "value", "target", "verdict"
    );
    for m in metrics {
        let mut notes: Vec<String> = m
            .also
            .iter()
            .map(|(c, ok)| format!("{c}: {}", if *ok { "yes" } else { "NO" }))
            .collect();
        if let Err(why) = &m.value {
            notes.push(why.clone());
        }
        let _ = writeln!(
            t,
            "{:<14} {:>14} {:>10}  {:<8} {}",
            m.name,
            m.shown(),
            m.target.to_string(),
            m.verdict(),
            notes.join("; ")
        );
    }
    println!("{t}");
    for m in metrics {
        println!("{}", m.json());
    }
}

/// The median of `v` (sorted here).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `median (min–max over N rounds)` of per-round figures.
pub fn spread(v: &[f64], digits: usize) -> String {
    let mut s = v.to_vec();
    let m = median(&mut s);
    format!(
        "{m:.digits$} (range {:.digits$}–{:.digits$} over {} rounds)",
        s.first().copied().unwrap_or(f64::NAN),
        s.last().copied().unwrap_or(f64::NAN),
        s.len()
    )
}

/// The `p`-quantile of sorted samples.
pub fn quantile<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A xorshift generator: enough to shuffle the order of measurements in
/// each round, so that none always runs just after the same other.
pub struct Shuffle(pub u64);

impl Shuffle {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }

    /// Seeded from the clock, so that each run has orders of its own.
    pub fn from_clock() -> Shuffle {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Shuffle(t | 1)
    }
}
