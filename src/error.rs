//! The crate's one error type.
//!
//! Every variant carries what a user needs to fix the problem: the file, the tensor or node, the
//! value that was expected and the value that was found.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A backend name that this crate does not know at all.
    #[error("unknown backend `{name}`: this build has {available}")]
    UnknownBackend {
        /// The name that was asked for.
        name: String,
        /// The backends compiled into this build, comma separated.
        available: String,
    },

    /// A backend this crate knows, but whose cargo feature is not compiled in.
    #[error(
        "backend `{name}` is not compiled into this build (enable the cargo feature `{name}`): this build has {available}"
    )]
    BackendNotCompiled {
        /// The name that was asked for.
        name: String,
        /// The backends compiled into this build, comma separated.
        available: String,
    },

    /// A configuration value outside what it allows.
    #[error("invalid configuration: `{field}` is {found}, expected {expected}")]
    InvalidConfig {
        /// The configuration field at fault.
        field: &'static str,
        /// What the field allows.
        expected: String,
        /// What it was.
        found: String,
    },

    /// A tensor whose shape is not the one expected.
    #[error("tensor `{tensor}`: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// The tensor's name (a model path such as `stages.2.blocks.0.conv1.weight`, or an input).
        tensor: String,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },

    /// A data file that ends in the middle of a record.
    #[error(
        "{path}: truncated record at byte offset {offset}: expected {expected} bytes, found {found}"
    )]
    Truncated {
        /// The file at fault.
        path: PathBuf,
        /// Byte offset of the incomplete record.
        offset: u64,
        /// Bytes a record needs.
        expected: usize,
        /// Bytes that were left.
        found: usize,
    },

    /// A label outside the classes of the dataset.
    #[error("{path}: label {label} at {location} is not below the {classes} classes")]
    BadLabel {
        /// The file at fault.
        path: PathBuf,
        /// Where the label is: a byte offset or an index in the file's label list.
        location: String,
        /// The label found.
        label: i64,
        /// Number of classes.
        classes: usize,
    },

    /// A file whose layout is not the one its format promises (a pickle without `data`, a
    /// `data` array of the wrong shape, a corrupt archive, a protobuf that does not parse).
    #[error("{path}: {reason}")]
    BadFormat {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },

    /// A downloaded or cached file whose checksum is not the published one.
    #[error("{path}: {algorithm} checksum mismatch: expected {expected}, found {found}. {hint}")]
    Checksum {
        /// The file at fault (for a download, where it would have gone: nothing is left there).
        path: PathBuf,
        /// `md5` or `sha256`.
        algorithm: &'static str,
        /// The published checksum.
        expected: String,
        /// The checksum of the file.
        found: String,
        /// What happened to the file and what the user can do.
        hint: String,
    },

    /// A download that failed; the message says which file to put where instead.
    #[error(
        "could not download {url}: {reason}. Without network, download it elsewhere and put it at {destination}"
    )]
    Download {
        /// The URL tried.
        url: String,
        /// Why it failed.
        reason: String,
        /// Where the file is expected.
        destination: PathBuf,
    },

    /// Data that could not be found where it was looked for.
    #[error("{what} not found; looked in: {looked_in}. {hint}")]
    NotFound {
        /// What was looked for.
        what: String,
        /// The places searched, comma separated.
        looked_in: String,
        /// What the user can do.
        hint: String,
    },

    /// An image file that could not be decoded.
    #[error("{path}: not a readable image: {reason}")]
    Image {
        /// The file at fault.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },

    /// An ONNX graph that is not a ResNet this crate can import, with the node where matching
    /// stopped.
    #[error("{path}: not an importable ResNet: at node `{node}` ({op}): {reason}")]
    UnsupportedGraph {
        /// The ONNX file.
        path: PathBuf,
        /// The node's name.
        node: String,
        /// The node's operator.
        op: String,
        /// What was expected there, and what was found.
        reason: String,
    },

    /// An ONNX model whose weights are stored in an external data file (as `torch.onnx.export`
    /// writes them by default) that is missing, too short, or outside the model's folder.
    #[error(
        "{model}: tensor `{tensor}` is stored in the external data file `{location}`, which {reason}"
    )]
    ExternalData {
        /// The ONNX model file.
        model: PathBuf,
        /// The initializer whose data is at fault.
        tensor: String,
        /// The data file as the model names it.
        location: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },

    /// A tensor whose values cannot be read the way they are needed.
    #[error("tensor `{tensor}`: {reason}")]
    BadTensor {
        /// The tensor at fault (a parameter's path in the model, or `images`).
        tensor: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A run folder that already holds a run, given to a job that was not asked to resume it.
    #[error(
        "{path} already holds a run (a checkpoint); pass --resume to continue it, or choose another --out"
    )]
    RunExists {
        /// The run folder.
        path: PathBuf,
    },
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder at fault.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A configuration field outside what it allows.
    pub fn invalid_config(
        field: &'static str,
        expected: impl Into<String>,
        found: impl ToString,
    ) -> Self {
        Error::InvalidConfig {
            field,
            expected: expected.into(),
            found: found.to_string(),
        }
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
