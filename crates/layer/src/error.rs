//! Errors of model construction.

/// A model or layer configuration that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// A size that must be positive is zero.
    #[error("{what} must be ≥ 1, got 0")]
    Zero {
        /// Which size.
        what: &'static str,
    },
    /// A tensor handed to a constructor has the wrong shape.
    #[error("{what}: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// Which tensor.
        what: &'static str,
        /// Expected shape.
        expected: Vec<usize>,
        /// Shape given.
        found: Vec<usize>,
    },
    /// Images that do not fit the model.
    #[error("images of shape {found:?} do not fit the model: {reason}")]
    Input {
        /// The shape given, `[batch, C, H, W]`.
        found: Vec<usize>,
        /// What the model expects.
        reason: String,
    },
    /// A model configuration is inconsistent.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// A model holds NaN or infinite values where compaction needs to read them.
    #[error("cannot compact `{layer}`: its {what} hold NaN or infinite values")]
    NonFinite {
        /// Path of the layer.
        layer: String,
        /// Which values.
        what: &'static str,
    },
    /// A model's declaration ([`Prunable`](crate::Prunable)) is inconsistent.
    #[error("invalid declaration: {0}")]
    Declaration(String),
    /// The compact model does not compute what the masked model computes on the example: a
    /// declaration does not match the model's forward.
    #[error(
        "the compact model {found}; {}",
        match layers.as_slice() {
            [] => "no single declaration explains it".to_string(),
            names => format!(
                "the declaration of {} (its readers, norm or activation) does not match the \
                 model's forward",
                names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            ),
        }
    )]
    Mismatch {
        /// What differs.
        found: String,
        /// The declared convs whose channel removal alone breaks the compact model.
        layers: Vec<String>,
    },
    /// Cost needs a layer's input size, known once a forward pass ran.
    #[error("the input size of `{layer}` is not known: run one forward pass before counting cost")]
    Unmeasured {
        /// Path of the layer.
        layer: String,
    },
}
