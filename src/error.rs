//! The crate's one error type.
//!
//! Every variant carries what a user needs to fix the problem: the file, the tensor or node, the
//! value that was expected and the value that was found.

use std::path::{Path, PathBuf};

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

    /// A run folder that already holds a run (its recipe or a checkpoint), given to a job that was
    /// not asked to resume it.
    #[error("{path} already holds a run; pass --resume to continue it, or choose another --out")]
    RunExists {
        /// The run folder.
        path: PathBuf,
    },

    /// A run asked to resume whose recipe differs from the one the run was started with (saved in
    /// its `config.json` and `job.json`): every option that differs, with both values. A resumed
    /// run may only run more epochs than planned (or be quieter, or export at its end).
    #[error(
        "{path} was started with another recipe, and --resume continues a run only with its own: {}. \
         Give the run's values, or choose another --out for a new run",
        changes.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    RecipeChanged {
        /// The run folder.
        path: PathBuf,
        /// Each option that differs.
        changes: Vec<RecipeChange>,
    },

    /// A run asked to resume that is finished: its model and report are written and its
    /// checkpoint removed (or, kept, it has no epoch left to run).
    #[error(
        "{path} holds a finished run (its evaluation.json is written): there is nothing to resume. \
         Choose another --out for a new run (a run kept with --keep-checkpoints can be resumed with \
         more epochs)"
    )]
    RunFinished {
        /// The run folder.
        path: PathBuf,
    },

    /// A run folder another process holds ([`crate::files::lock_folder`]).
    #[error(
        "{path} is in use by another run ({}); wait for it to end, or choose another --out",
        match pid { Some(p) => format!("process {p}"), None => "process id not known yet".into() }
    )]
    RunLocked {
        /// The run folder.
        path: PathBuf,
        /// The holder's process id, as it wrote it in the folder's `run.lock`.
        pid: Option<u32>,
    },

    /// An output path of the wrong kind: a file where a folder is needed, or the other way round.
    #[error("{option} {path} is a {found}, not a {expected}")]
    PathKind {
        /// The option that gave the path (`--out`, `--export-onnx`).
        option: &'static str,
        /// The path at fault (the given one, or the one above it that stands in the way).
        path: PathBuf,
        /// What it is: `file` or `folder`.
        found: &'static str,
        /// What it must be.
        expected: &'static str,
    },

    /// A setting that watches the validation loss (early stopping, the plateau schedule) given to
    /// a run without validation images.
    #[error(
        "`{field}` is {found}, but it watches the validation loss, and this run has no validation \
         images (an empty validation set, as --valid-samples 0 asks for): leave `{field}` out, or \
         give validation images"
    )]
    NeedsValidation {
        /// The setting at fault: `patience` or `schedule`.
        field: &'static str,
        /// Its value.
        found: String,
    },

    /// Grad-CAM asked of images so small that the network's last stage is a single cell (32x32
    /// into a ResNet: 1x1), where a map has nothing to place: every photo's "map" would be one
    /// number.
    #[error(
        "Grad-CAM on {height}x{width} images: the last stage is {map_height}x{map_width}, a \
         single cell, so there is no map to show; use inputs of more than 32x32 (33 to 64 give a \
         2x2 map, 96 3x3, 224 7x7)"
    )]
    CoarseMap {
        /// Input height in pixels.
        height: usize,
        /// Input width in pixels.
        width: usize,
        /// The last stage's height at that input.
        map_height: usize,
        /// The last stage's width at that input.
        map_width: usize,
    },

    /// Training diverged: an epoch's loss is not a finite number (too high a learning rate, or
    /// inputs with NaN in them). The run stops before that epoch is checkpointed, as Keras's
    /// `TerminateOnNaN` stops it, so a checkpoint never holds the broken weights.
    #[error(
        "training diverged: the {which} loss of epoch {epoch} (phase {phase}, learning rate \
         {lr:e}) is {value}; the run stops before checkpointing it. Train again with a lower \
         rate (the option --phase{phase}-lr) in a new --out (a resume keeps the run's rates), or \
         look for NaN in the inputs"
    )]
    Diverged {
        /// The epoch, from 1.
        epoch: usize,
        /// Its phase, 1 or 2.
        phase: u8,
        /// Its learning rate.
        lr: f64,
        /// `training` or `validation`.
        which: &'static str,
        /// The loss: NaN or infinite.
        value: f64,
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
    /// The file and the reason, where this error is about one file that could not be read as a
    /// photo: its content ([`Error::Image`]) or reading it ([`Error::Io`]: missing, a broken
    /// link, no permission). What `--skip-bad` leaves out and lists.
    ///
    /// ```
    /// use resnet_transfer::data::read_image;
    ///
    /// let error = read_image("no-such-photo.jpg".as_ref(), 224).unwrap_err();
    /// let (file, reason) = error.unreadable_file().unwrap();
    /// assert_eq!(file, std::path::Path::new("no-such-photo.jpg"));
    /// assert!(!reason.is_empty());
    /// ```
    pub fn unreadable_file(&self) -> Option<(&Path, String)> {
        match self {
            Error::Image { path, reason } => Some((path, reason.clone())),
            Error::Io { path, source } => Some((path, source.to_string())),
            _ => None,
        }
    }

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

/// One option of a resumed run that differs from the run's recipe ([`Error::RecipeChanged`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeChange {
    /// The option, by its field name (`input_size`, `phase2_lr`, `valid_samples`).
    pub option: String,
    /// Its value in the run's saved recipe.
    pub saved: String,
    /// The value given now.
    pub given: String,
    /// Why the change is refused where a change of its kind can be allowed (more epochs).
    pub why: Option<String>,
}

impl std::fmt::Display for RecipeChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` saved {}, given {}",
            self.option, self.saved, self.given
        )?;
        match &self.why {
            Some(why) => write!(f, " ({why})"),
            None => Ok(()),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
