//! The benchmark's table: each figure beside its floor and its peer.

use std::fmt::Write as _;

/// Which direction of a figure is good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Throughput: more is better.
    Higher,
    /// Latency: less is better.
    Lower,
}

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Line {
    /// What was measured, in words.
    pub figure: String,
    /// The unit of `ours`, the floor and the peer.
    pub unit: String,
    /// yuki's figure.
    pub ours: f64,
    /// Which direction is good.
    pub better: Better,
    /// The bare mechanism measured in the same run: (name, figure).
    pub floor: Option<(String, f64)>,
    /// The peer measured in the same run: (name, figure), or why it did not run.
    pub peer: Option<(String, Result<f64, String>)>,
    /// The target in words, e.g. "<= 1.5x floor".
    pub target: Option<String>,
}

impl Line {
    /// A figure with no floor and no peer yet.
    pub fn new(
        figure: impl Into<String>,
        unit: impl Into<String>,
        ours: f64,
        better: Better,
    ) -> Line {
        Line {
            figure: figure.into(),
            unit: unit.into(),
            ours,
            better,
            floor: None,
            peer: None,
            target: None,
        }
    }

    /// Sets the floor measured in the same run.
    pub fn floor(mut self, name: impl Into<String>, value: f64) -> Line {
        self.floor = Some((name.into(), value));
        self
    }

    /// Sets the peer's figure, or the reason it was not run.
    pub fn peer(mut self, name: impl Into<String>, value: Result<f64, String>) -> Line {
        self.peer = Some((name.into(), value));
        self
    }

    /// Sets the target, in words.
    pub fn target(mut self, target: impl Into<String>) -> Line {
        self.target = Some(target.into());
        self
    }

    /// How many times worse than `other` ours is (1.0 = equal; below 1 = better).
    fn cost_vs(&self, other: f64) -> f64 {
        match self.better {
            Better::Lower => self.ours / other,
            Better::Higher => other / self.ours,
        }
    }

    fn cells(&self) -> [String; 7] {
        let floor = self
            .floor
            .as_ref()
            .map(|(n, v)| format!("{} ({n})", num(*v)))
            .unwrap_or_else(|| "-".into());
        let vs_floor = self
            .floor
            .as_ref()
            .map(|(_, v)| format!("{:.2}x", self.cost_vs(*v)))
            .unwrap_or_else(|| "-".into());
        let (peer, vs_peer) = match &self.peer {
            None => ("-".into(), "-".into()),
            Some((n, Ok(v))) => (
                format!("{} ({n})", num(*v)),
                format!("{:.2}x", self.cost_vs(*v)),
            ),
            Some((n, Err(why))) => (format!("{n}: {why}"), "-".into()),
        };
        [
            self.figure.clone(),
            format!("{} {}", num(self.ours), self.unit),
            floor,
            vs_floor,
            peer,
            vs_peer,
            self.target.clone().unwrap_or_default(),
        ]
    }
}

/// A figure with three significant digits or so.
pub fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

const HEADER: [&str; 7] = [
    "figure",
    "yuki",
    "floor",
    "cost vs floor",
    "peer",
    "cost vs peer",
    "target",
];

/// The whole table.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The lines in the order measured.
    pub lines: Vec<Line>,
    /// The areas that failed: (area, what went wrong).
    pub errors: Vec<(String, String)>,
}

impl Report {
    /// Adds a line and prints it at once, so a long run shows progress.
    pub fn add(&mut self, line: Line) {
        let c = line.cells();
        println!(
            "{:<44} {:>18}  floor {:<24} {:>7}  peer {:<24} {:>7}  {}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6]
        );
        self.lines.push(line);
    }

    /// Records that `area` failed, and prints it at once. The run goes on
    /// with the other areas; the table lists the failure.
    pub fn fail(&mut self, area: impl Into<String>, error: impl Into<String>) {
        let (area, error) = (area.into(), error.into());
        eprintln!("{area} FAILED: {error}");
        self.errors.push((area, error));
    }

    /// The table as Markdown, then the failed areas if any. "cost" is how
    /// many times worse yuki is than the floor or peer: below 1.00x yuki is
    /// better.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| {} |", HEADER.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(HEADER.len()));
        for line in &self.lines {
            let _ = writeln!(out, "| {} |", line.cells().join(" | "));
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out, "\n**Failed areas** (their figures are missing):\n");
            for (area, error) in &self.errors {
                let _ = writeln!(out, "- {area}: {}", error.replace('\n', " "));
            }
        }
        out
    }

    /// The table as CSV.
    pub fn to_csv(&self) -> String {
        let mut out =
            String::from("figure,unit,yuki,better,floor_name,floor,peer_name,peer,target\n");
        for l in &self.lines {
            let (fname, fval) = l
                .floor
                .as_ref()
                .map(|(n, v)| (n.clone(), v.to_string()))
                .unwrap_or_default();
            let (pname, pval) = match &l.peer {
                Some((n, Ok(v))) => (n.clone(), v.to_string()),
                Some((n, Err(why))) => (n.clone(), format!("not run: {why}")),
                None => Default::default(),
            };
            let row = [
                l.figure.clone(),
                l.unit.clone(),
                l.ours.to_string(),
                format!("{:?}", l.better).to_lowercase(),
                fname,
                fval,
                pname,
                pval,
                l.target.clone().unwrap_or_default(),
            ];
            let quoted: Vec<String> = row.iter().map(|c| csv_cell(c)).collect();
            let _ = writeln!(out, "{}", quoted.join(","));
        }
        out
    }
}

fn csv_cell(c: &str) -> String {
    if c.contains([',', '"', '\n']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_follow_the_direction() {
        let lat = Line::new("rtt", "us", 15.0, Better::Lower).floor("raw", 10.0);
        assert_eq!(lat.cells()[3], "1.50x");
        let tput = Line::new("ops", "M/s", 2.0, Better::Higher).floor("raw", 1.0);
        assert_eq!(tput.cells()[3], "0.50x");
    }

    #[test]
    fn csv_quotes_and_reports_missing_peer() {
        let mut r = Report::default();
        r.lines.push(
            Line::new("a, b", "us", 1.0, Better::Lower).peer("redis", Err("not installed".into())),
        );
        let csv = r.to_csv();
        assert!(csv.contains("\"a, b\""));
        assert!(csv.contains("not run: not installed"));
    }

    #[test]
    fn failed_areas_are_listed_under_the_table() {
        let mut r = Report::default();
        assert!(!r.to_markdown().contains("Failed"));
        r.fail("store", "the child failed: exit status 1");
        let md = r.to_markdown();
        assert!(md.contains("**Failed areas**"));
        assert!(md.contains("- store: the child failed: exit status 1"));
        assert_eq!(r.errors.len(), 1);
    }
}
