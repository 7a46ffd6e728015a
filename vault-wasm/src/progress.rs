//! Progress of long work, reported to a JS callback `(done, total, phase)`.

use wasm_bindgen::JsValue;

/// A progress callback from the page (or none).
pub struct Progress(Option<js_sys::Function>);

impl Progress {
    /// Reports to `f`, if given.
    pub fn new(f: Option<js_sys::Function>) -> Self {
        Self(f)
    }

    /// Reports `done` of `total` in `phase` (`"sealing"`, `"uploading"`,
    /// `"importing"`, …). A callback that throws is ignored: progress never
    /// fails the work.
    pub fn report(&self, done: u64, total: u64, phase: &str) {
        if let Some(f) = &self.0 {
            // f64 holds every byte count below 2^53 exactly.
            let _ = f.call3(
                &JsValue::NULL,
                &JsValue::from_f64(done as f64),
                &JsValue::from_f64(total as f64),
                &JsValue::from_str(phase),
            );
        }
    }
}
