//! Text values of the `org.imgbuild.v1` extension: bounded strings, JSON kinds for messages.

use serde_json::Value;

use super::IMGBUILD_V1;

/// Text settings (release, console mode, distro name) longer than this are refused.
const MAX_SETTING: usize = 256;

/// A string setting of `org.imgbuild.v1` (`what` names it in errors): at most
/// [`MAX_SETTING`] bytes, no control character (line breaks, escapes, NUL).
pub(super) fn setting_text(v: &Value, what: &str) -> std::result::Result<String, String> {
    match v {
        Value::String(s) if s.len() > MAX_SETTING => Err(format!(
            "\"{IMGBUILD_V1}\".{what} is longer than {MAX_SETTING} bytes"
        )),
        Value::String(s) if s.contains(char::is_control) => Err(format!(
            "\"{IMGBUILD_V1}\".{what} contains a control character"
        )),
        Value::String(s) => Ok(s.clone()),
        other => Err(format!(
            "\"{IMGBUILD_V1}\".{what} is {}, not a string",
            json_kind(other)
        )),
    }
}

pub(super) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
