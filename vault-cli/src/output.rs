//! Printing: text tables or JSON on stdout, notices and progress on stderr
//! (so stdout stays scriptable).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::error::{CliError, Result};

/// How results are printed.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    /// JSON on stdout instead of text.
    pub json: bool,
    /// No notices or progress.
    pub quiet: bool,
}

impl Output {
    /// Prints a notice for people on stderr (not with `--quiet`).
    pub fn notice(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }

    /// Prints a warning on stderr (even with `--quiet`: it is about the
    /// data, not progress).
    pub fn warn(&self, msg: impl std::fmt::Display) {
        eprintln!("{msg}");
    }

    /// Prints a value as pretty JSON on stdout.
    pub fn json<T: Serialize>(&self, value: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| CliError::Usage(format!("cannot encode the output as JSON: {e}")))?;
        line(&text)
    }

    /// A progress bar over `total` units (bytes when `bytes`), drawn on
    /// stderr only when it is a terminal and not `--quiet`.
    pub fn progress(&self, total: u64, what: &str, bytes: bool) -> ProgressBar {
        let visible = !self.quiet && std::io::stderr().is_terminal();
        let bar = ProgressBar::with_draw_target(
            Some(total),
            if visible {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        let template = if bytes {
            "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
        } else {
            "{msg:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}

/// Prints one line on stdout; a closed pipe (`vault list | head`) is not an
/// error worth a message.
pub fn line(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::file("<stdout>", e)),
    }
}

/// Prints rows as aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_owned()
    };
    line(&render(&mut header.iter().copied()))?;
    for row in rows {
        line(&render(&mut row.iter().map(String::as_str)))?;
    }
    Ok(())
}

pub use vault_fhir::clean;

/// A short form of a hex id, as lists show it.
pub fn short(hex: &str) -> String {
    hex.get(..12).unwrap_or(hex).to_owned()
}

/// A QR code drawn with Unicode half blocks (two modules per character
/// row), light on dark with its quiet zone, as terminals show it.
pub fn qr_text(code: &qrcode::QrCode) -> String {
    use qrcode::render::unicode::Dense1x2;
    code.render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build()
}
