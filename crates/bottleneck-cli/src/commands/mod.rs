//! One module per subcommand: its arguments (`clap::Args`) and its `run`.

use std::path::Path;

use bottleneck::report::ReportSummary;

pub mod boards;
pub mod demo;
pub mod denoise;
pub mod encode;
pub mod eval;
pub mod export;
pub mod impute;
pub mod index;
pub mod machines;
pub mod report;
pub mod score;
pub mod search;
pub mod serve;
pub mod train;

/// One line about a written report: what it covers and, with labels, how well it ranks.
pub(crate) fn report_note(path: &Path, s: &ReportSummary, what: &str) -> String {
    let quality = match (s.auroc, s.aupr) {
        (Some(roc), Some(pr)) => format!(", AUROC {roc:.4}, AUPR {pr:.4}"),
        _ if s.labelled => ", labels of one class only".into(),
        _ => String::new(),
    };
    format!(
        "wrote report {} ({} KB): {} {what}, {} flagged{quality}{}",
        path.display(),
        s.bytes.div_ceil(1024),
        s.samples,
        s.flagged,
        skipped_note(s.skipped)
    )
}

pub(crate) fn skipped_note(skipped: usize) -> String {
    if skipped > 0 {
        format!(", {skipped} skipped")
    } else {
        String::new()
    }
}
