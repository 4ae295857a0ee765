//! Users' own photos: a folder per class (torchvision's `ImageFolder`, Keras's
//! `image_dataset_from_directory`), listed into [`ImageFiles`] and read into an [`ImageSet`] of
//! one square size, all at once ([`ImageFiles::read`]) or a chunk at a time
//! ([`ImageFiles::chunks`]).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::data::images::ImageSet;
use crate::data::photo::read_image;
use crate::error::{Error, Result};

/// Photo file endings the folder readers take, compared without case: torchvision's
/// `IMG_EXTENSIONS` and GIF. [`read_image`] decodes each file by its content, whatever its
/// ending says.
pub const IMAGE_EXTENSIONS: [&str; 10] = [
    "jpg", "jpeg", "png", "ppm", "pgm", "bmp", "tif", "tiff", "webp", "gif",
];

/// Photos read from a folder per class.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFolder {
    /// The images, square, labelled by class folder.
    pub images: ImageSet,
    /// Class names: the sub-folders' names, sorted (as torchvision and Keras sort them).
    pub class_names: Vec<String>,
    /// The file each image came from, in the images' order.
    pub files: Vec<PathBuf>,
    /// Files with a photo ending that could not be read, each with the reason: cut short,
    /// empty, not decodable, a broken link (only when reading with `skip_bad`; otherwise the
    /// first one is an error).
    pub skipped: Vec<(PathBuf, String)>,
}

/// The photo files of a folder per class, listed but not read: what [`read_image_folder`]
/// reads, and what a caller that wants a chunk at a time in memory reads with
/// [`chunks`](Self::chunks).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFiles {
    /// The folder holding the class folders.
    pub root: PathBuf,
    /// Class names: the class folders' names, sorted, or the names given to
    /// [`with_classes`](Self::with_classes).
    pub class_names: Vec<String>,
    /// The photo files, class by class, each class's sorted by path.
    pub files: Vec<PathBuf>,
    /// The other files in the class folders, left out, counted by ending (`.heic`, `.txt`,
    /// "no ending"): what a caller tells its user it did not read.
    pub left_out: BTreeMap<String, usize>,
    /// The label of each file (an index into `class_names`).
    pub labels: Vec<usize>,
}

/// The memory a photo set may take decoded before a training job streams it instead
/// ([`ImageFiles::stream`]) by default: a quarter of this machine's memory (`MemTotal` in
/// `/proc/meminfo` on Linux), or 4 GiB where that cannot be read.
pub fn default_memory_budget() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        });
    total.map_or(4 << 30, |bytes| bytes / 4)
}

/// A size in bytes as a person reads it: bytes, KB, MB or GB (powers of 1000), three figures.
///
/// ```
/// assert_eq!(resnet_transfer::data::in_words(1_024), "1.0 KB");
/// assert_eq!(resnet_transfer::data::in_words(6_300_000_000), "6.30 GB");
/// ```
pub fn in_words(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} bytes"),
        1_000..1_000_000 => format!("{:.1} KB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}

/// Reads photos in `root/<class>/...`: [`list_image_folder`], then every photo decoded
/// ([`read_image`]: upright, resized and centre-cropped to `size` x `size`).
///
/// A file with a photo ending that cannot be read (cut short, empty, not decodable, a broken
/// link) is an [`Error::Image`] or [`Error::Io`] naming it, unless `skip_bad` is set: then it is
/// left out and listed with its reason in [`ImageFolder::skipped`]. A class left without any
/// readable photo is an [`Error::NotFound`] naming its folder either way.
///
/// ```no_run
/// let photos = resnet_transfer::data::read_image_folder("photos".as_ref(), 224, false)?;
/// println!("{} photos of {:?}", photos.images.len(), photos.class_names);
/// # Ok::<(), resnet_transfer::Error>(())
/// ```
pub fn read_image_folder(root: &Path, size: usize, skip_bad: bool) -> Result<ImageFolder> {
    list_image_folder(root)?.read(size, skip_bad)
}

/// Lists the photos in `root/<class>/...` as torchvision's `ImageFolder` does: class names are
/// the sub-folders' names, sorted; each class folder is searched through all its sub-folders,
/// following links (`os.walk(followlinks=True)`), for files with a photo ending
/// ([`IMAGE_EXTENSIONS`]), sorted by their path. Files and folders whose names start with a dot
/// are left out at every level (`.ipynb_checkpoints`, `.DS_Store`, macOS's `._photo.jpg`), and
/// so are other files (`README.txt`) and files lying in `root` itself.
///
/// # Errors
///
/// [`Error::NotFound`] when `root` holds no class folder, or a class folder holds no photo
/// (naming it, and the endings of what it holds instead); [`Error::BadFormat`] naming a photo
/// that two class folders both reach (a link in one leading to the other, or to `root`);
/// [`Error::Io`] for a folder that cannot be listed.
pub fn list_image_folder(root: &Path) -> Result<ImageFiles> {
    let mut classes = Vec::new();
    let mut loose = 0;
    for path in list(root)? {
        if is_hidden(&path) {
            continue;
        }
        // `is_dir` follows links: a linked class folder is a class folder.
        if path.is_dir() {
            classes.push(path);
        } else if is_image(&path) {
            loose += 1;
        }
    }
    classes.sort();
    if classes.is_empty() {
        let found = if loose > 0 {
            format!(" ({loose} photos lie in it directly, outside any class folder)")
        } else {
            String::new()
        };
        return Err(Error::NotFound {
            what: "class folders".into(),
            looked_in: format!("{}{found}", root.display()),
            hint: "Put each class's images in a folder of its own: ROOT/cat/1.jpg, ROOT/dog/2.png"
                .into(),
        });
    }
    let mut files = Vec::new();
    let mut labels = Vec::new();
    let mut left_out = BTreeMap::new();
    for (label, dir) in classes.iter().enumerate() {
        let mut found = Vec::new();
        let mut others = BTreeMap::new();
        walk(dir, &mut Vec::new(), &mut found, &mut others)?;
        if found.is_empty() {
            return Err(empty_class(dir, &others));
        }
        for (ending, count) in others {
            *left_out.entry(ending).or_default() += count;
        }
        found.sort();
        labels.extend(std::iter::repeat_n(label, found.len()));
        files.extend(found);
    }
    check_one_class_each(&files, &labels, &classes)?;
    Ok(ImageFiles {
        root: root.to_path_buf(),
        class_names: classes.iter().map(|c| file_name(c)).collect(),
        files,
        left_out,
        labels,
    })
}

impl ImageFiles {
    /// What the listing left out, for its user: `left out 3 files that are not photos this crate
    /// reads (2 .HEIC, 1 .txt)`, or `None` where it left nothing out.
    pub fn left_out_line(&self) -> Option<String> {
        if self.left_out.is_empty() {
            return None;
        }
        let what = match self.left_out.values().sum::<usize>() {
            1 => "1 file that is not a photo".to_string(),
            n => format!("{n} files that are not photos"),
        };
        Some(format!(
            "left out {what} this crate reads ({})",
            by_ending(&self.left_out)
        ))
    }

    /// Number of photo files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there is no photo file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The same files labelled by `names` instead: each class folder's photos get the index of
    /// its name in `names` (a model's classes), which may hold more classes than the folder.
    ///
    /// # Errors
    ///
    /// [`Error::BadFormat`] naming the folder and both lists when a class folder's name is not in
    /// `names`.
    pub fn with_classes(self, names: &[String]) -> Result<Self> {
        let missing: Vec<&String> = (self.class_names.iter())
            .filter(|c| !names.contains(c))
            .collect();
        if !missing.is_empty() {
            return Err(Error::BadFormat {
                path: self.root.clone(),
                reason: format!(
                    "the class folders {missing:?} are not among the model's classes {} \
                     (folders found: {:?}); name each class folder after one of the model's \
                     classes",
                    crate::names::abridged(names, 20),
                    self.class_names,
                ),
            });
        }
        let to_names: Vec<usize> = (self.class_names.iter())
            .map(|c| names.iter().position(|n| n == c).unwrap_or_default())
            .collect();
        Ok(Self {
            labels: self.labels.iter().map(|&l| to_names[l]).collect(),
            class_names: names.to_vec(),
            ..self
        })
    }

    /// Decodes every photo ([`read_image_folder`] says how, and what `skip_bad` does).
    pub fn read(&self, size: usize, skip_bad: bool) -> Result<ImageFolder> {
        let (folder, skipped_labels) = self.read_range(0..self.len(), size, skip_bad)?;
        let mut tally = ClassTally::new(self.class_names.len());
        tally.add(&folder, &skipped_labels);
        self.check_every_class_read(&tally)?;
        Ok(folder)
    }

    /// The photos as a streamed set ([`ImageSet::streamed`]): each is decoded once here, a chunk
    /// at a time, to find the unreadable ones (refused, or left out with `skip_bad`, as
    /// [`read`](Self::read) does), and then only its path and label are kept; training decodes
    /// it again each time a batch takes it. Memory holds the file list, whatever the photos'
    /// number.
    ///
    /// ```no_run
    /// let files = resnet_transfer::data::list_image_folder("photos".as_ref())?;
    /// let photos = files.stream(224, true)?;
    /// assert!(photos.images.is_streamed());
    /// println!("{} photos, {} skipped", photos.images.len(), photos.skipped.len());
    /// # Ok::<(), resnet_transfer::Error>(())
    /// ```
    pub fn stream(&self, size: usize, skip_bad: bool) -> Result<ImageFolder> {
        const CHUNK: usize = 256;
        let (mut files, mut labels, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        for chunk in self.chunks(size, CHUNK, skip_bad) {
            let chunk = chunk?;
            labels.extend_from_slice(chunk.images.labels());
            files.extend(chunk.files);
            skipped.extend(chunk.skipped);
        }
        Ok(ImageFolder {
            images: ImageSet::streamed(files.clone(), labels, size)?,
            class_names: self.class_names.clone(),
            files,
            skipped,
        })
    }

    /// Decodes the photos `chunk` at a time, in order, so that memory holds one chunk of pixels
    /// however many photos there are (`evaluate --images` reads a batch at a time). Each item is
    /// an [`ImageFolder`] of the chunk's readable photos (the whole list's class names; `skipped`
    /// the chunk's). After the last chunk comes an error if a class was left without any
    /// readable photo; the first error ends the iteration.
    pub fn chunks(&self, size: usize, chunk: usize, skip_bad: bool) -> ImageChunks<'_> {
        ImageChunks {
            files: self,
            size,
            chunk: chunk.max(1),
            skip_bad,
            next: 0,
            tally: ClassTally::new(self.class_names.len()),
            done: false,
        }
    }

    /// The readable photos of `range`, and the label of each skipped file.
    fn read_range(
        &self,
        range: Range<usize>,
        size: usize,
        skip_bad: bool,
    ) -> Result<(ImageFolder, Vec<usize>)> {
        if size == 0 {
            return Err(Error::invalid_config("input_size", "at least 1", 0));
        }
        let files = &self.files[range.clone()];
        // Decoding is most of the time; photos decode independently, each straight into its
        // place in the set's buffer (reserved whole, its pages touched as photos land): holding
        // every decoded photo first, and growing the buffer by doubling, had the set peak at
        // three times its pixels.
        let per = 3 * size * size;
        let mut pixels = vec![0u8; files.len() * per];
        let decoded: Vec<Result<()>> = (pixels.par_chunks_mut(per))
            .zip(files.par_iter())
            .map(|(slot, file)| {
                slot.copy_from_slice(&read_image(file, size)?);
                Ok(())
            })
            .collect();
        let (mut labels, mut kept) = (Vec::new(), Vec::new());
        let (mut skipped, mut skipped_labels) = (Vec::new(), Vec::new());
        for (i, ((file, &label), result)) in (files.iter().zip(&self.labels[range]))
            .zip(decoded)
            .enumerate()
        {
            match result {
                Ok(()) => {
                    // Photos after a skipped one move down to close the gap.
                    let slot = kept.len();
                    if slot != i {
                        pixels.copy_within(i * per..(i + 1) * per, slot * per);
                    }
                    labels.push(label);
                    kept.push(file.clone());
                }
                Err(e) => match skippable(&e, file) {
                    Some(reason) if skip_bad => {
                        skipped.push((file.clone(), reason));
                        skipped_labels.push(label);
                    }
                    _ => return Err(e),
                },
            }
        }
        pixels.truncate(kept.len() * per);
        let folder = ImageFolder {
            images: ImageSet::new(pixels, labels, size, size)?.with_files(kept.clone())?,
            class_names: self.class_names.clone(),
            files: kept,
            skipped,
        };
        Ok((folder, skipped_labels))
    }

    /// Refuses a class all of whose photos were skipped: training or scoring without it would
    /// be silently wrong.
    fn check_every_class_read(&self, tally: &ClassTally) -> Result<()> {
        let unread = (0..self.class_names.len())
            .find(|&c| tally.read[c] == 0 && tally.first_skipped[c].is_some());
        let Some(c) = unread else {
            return Ok(());
        };
        let (file, reason) = tally.first_skipped[c].clone().unwrap_or_default();
        Err(Error::NotFound {
            what: format!("readable photos of class `{}`", self.class_names[c]),
            looked_in: self.root.join(&self.class_names[c]).display().to_string(),
            hint: format!(
                "All {} of its photos were skipped as unreadable (the first, {}: {reason}); \
                 replace them, or remove the class folder",
                tally.skipped[c],
                file.display()
            ),
        })
    }
}

/// Photos read and skipped per class, so far.
#[derive(Debug)]
struct ClassTally {
    read: Vec<usize>,
    skipped: Vec<usize>,
    first_skipped: Vec<Option<(PathBuf, String)>>,
}

impl ClassTally {
    fn new(classes: usize) -> Self {
        Self {
            read: vec![0; classes],
            skipped: vec![0; classes],
            first_skipped: vec![None; classes],
        }
    }

    fn add(&mut self, folder: &ImageFolder, skipped_labels: &[usize]) {
        for &label in folder.images.labels() {
            self.read[label] += 1;
        }
        for (skip, &label) in folder.skipped.iter().zip(skipped_labels) {
            self.skipped[label] += 1;
            self.first_skipped[label].get_or_insert_with(|| skip.clone());
        }
    }
}

/// The photos of an [`ImageFiles`] decoded a chunk at a time: [`ImageFiles::chunks`].
#[derive(Debug)]
pub struct ImageChunks<'a> {
    files: &'a ImageFiles,
    size: usize,
    chunk: usize,
    skip_bad: bool,
    next: usize,
    tally: ClassTally,
    done: bool,
}

impl Iterator for ImageChunks<'_> {
    type Item = Result<ImageFolder>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.next >= self.files.len() {
            self.done = true;
            return self
                .files
                .check_every_class_read(&self.tally)
                .err()
                .map(Err);
        }
        let range = self.next..(self.next + self.chunk).min(self.files.len());
        self.next = range.end;
        match self.files.read_range(range, self.size, self.skip_bad) {
            Ok((folder, skipped_labels)) => {
                self.tally.add(&folder, &skipped_labels);
                Some(Ok(folder))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// The reason to give for skipping `file`, when `error` is about that file's content or about
/// reading it (a broken link, a permission), not about anything else.
fn skippable(error: &Error, file: &Path) -> Option<String> {
    let (path, reason) = error.unreadable_file()?;
    (path == file).then_some(reason)
}

/// Adds the photo files under `dir` to `found`, through every sub-folder and link but hidden
/// ones, and counts the other files' endings in `others`. `inside` holds the folders the walk
/// is in, so that a link back up to one of them is not followed round again.
fn walk(
    dir: &Path,
    inside: &mut Vec<PathBuf>,
    found: &mut Vec<PathBuf>,
    others: &mut BTreeMap<String, usize>,
) -> Result<()> {
    let real = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    if inside.contains(&real) {
        return Ok(());
    }
    inside.push(real);
    for path in list(dir)? {
        if is_hidden(&path) {
            continue;
        }
        if path.is_dir() {
            walk(&path, inside, found, others)?;
        } else if is_image(&path) {
            // A broken link with a photo ending is listed too, so that reading it says so.
            found.push(path);
        } else {
            let ending = path.extension().map_or_else(
                || "no ending".to_string(),
                |e| format!(".{}", e.to_string_lossy()),
            );
            *others.entry(ending).or_default() += 1;
        }
    }
    inside.pop();
    Ok(())
}

/// Refuses a photo reached from two class folders (through a link inside one of them to the
/// root, or to another class's folder): it would be trained on under both labels. Files are
/// compared by their real path; one that has none (a broken link) is left to its reading.
fn check_one_class_each(files: &[PathBuf], labels: &[usize], classes: &[PathBuf]) -> Result<()> {
    let mut seen = std::collections::HashMap::with_capacity(files.len());
    for (file, &label) in files.iter().zip(labels) {
        let Ok(real) = std::fs::canonicalize(file) else {
            continue;
        };
        match seen.entry(real) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert((label, file));
            }
            std::collections::hash_map::Entry::Occupied(first) => {
                let (first_label, first_file) = *first.get();
                if first_label != label {
                    return Err(Error::BadFormat {
                        path: file.clone(),
                        reason: format!(
                            "this photo is also {} in class `{}`, so it would be trained on as \
                             both `{}` and `{}`; a link inside a class folder leads to another \
                             class's photos (or to the folder above them): remove the link",
                            first_file.display(),
                            file_name(&classes[first_label]),
                            file_name(&classes[first_label]),
                            file_name(&classes[label]),
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Files counted by ending, as a person reads them: `2 .HEIC, 1 .txt`.
fn by_ending(counts: &BTreeMap<String, usize>) -> String {
    let counts: Vec<String> = counts.iter().map(|(e, n)| format!("{n} {e}")).collect();
    counts.join(", ")
}

fn empty_class(dir: &Path, others: &BTreeMap<String, usize>) -> Error {
    let held = if others.is_empty() {
        "it holds no files (hidden ones aside)".to_string()
    } else {
        format!("it holds only other files: {}", by_ending(others))
    };
    Error::NotFound {
        what: format!("photos of class `{}`", file_name(dir)),
        looked_in: format!("{} and its sub-folders", dir.display()),
        hint: format!(
            "Photos are files ending in .{}; {held}. Put photos in it, or remove it",
            IMAGE_EXTENSIONS.join(", .")
        ),
    }
}

fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    entries
        .map(|e| e.map(|e| e.path()).map_err(|err| Error::io(dir, err)))
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

fn is_hidden(path: &Path) -> bool {
    file_name(path).starts_with('.')
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
            .save_with_format(path, image::ImageFormat::Png)
            .unwrap();
    }

    /// Sub-folders are walked, hidden names left out at every level, files sorted by path.
    #[test]
    fn class_folders_are_walked_and_hidden_names_left_out() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for f in [
            "b/2.png",
            "b/sub/1.png",
            "b/a.png",
            "a/x/y/deep.PNG",
            "a/top.jpg",
        ] {
            photo(&r.join(f));
        }
        for f in [".ipynb_checkpoints/c.png", "b/.hidden/h.png", "b/._a.png"] {
            photo(&r.join(f));
        }
        std::fs::write(r.join("b/README.txt"), "notes").unwrap();
        std::fs::write(r.join("b/.DS_Store"), b"\0\0\0\x01Bud1").unwrap();
        let listed = list_image_folder(r).unwrap();
        assert_eq!(listed.class_names, ["a", "b"]);
        let relative: Vec<_> = (listed.files.iter())
            .map(|f| f.strip_prefix(r).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            relative,
            [
                "a/top.jpg",
                "a/x/y/deep.PNG",
                "b/2.png",
                "b/a.png",
                "b/sub/1.png"
            ]
        );
        assert_eq!(listed.labels, [0, 0, 1, 1, 1]);
        // What was left out is counted for the user (hidden files aside).
        assert_eq!(listed.left_out, BTreeMap::from([(".txt".to_string(), 1)]));
        assert_eq!(
            listed.left_out_line().unwrap(),
            "left out 1 file that is not a photo this crate reads (1 .txt)"
        );
    }

    #[cfg(unix)]
    #[test]
    fn links_are_followed_once_round_a_loop() {
        let (root, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (r, o) = (root.path(), outside.path());
        photo(&o.join("more cats/1.png"));
        photo(&o.join("dogs/2.png"));
        photo(&r.join("cat/0.png"));
        std::os::unix::fs::symlink(o.join("more cats"), r.join("cat/linked")).unwrap();
        std::os::unix::fs::symlink(r.join("cat"), r.join("cat/loop")).unwrap();
        std::os::unix::fs::symlink(o.join("dogs"), r.join("dog")).unwrap();
        let listed = list_image_folder(r).unwrap();
        assert_eq!(listed.class_names, ["cat", "dog"]);
        assert_eq!(listed.labels, [0, 0, 1]);
        assert!(listed.files[1].ends_with("cat/linked/1.png"));
    }

    #[test]
    fn a_side_of_zero_is_refused_by_name_not_a_panic() {
        let root = tempfile::tempdir().unwrap();
        photo(&root.path().join("cat/0.png"));
        photo(&root.path().join("dog/0.png"));
        let listed = list_image_folder(root.path()).unwrap();
        for result in [listed.read(0, false), listed.stream(0, true)] {
            let err = result.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidConfig {
                        field: "input_size",
                        ..
                    }
                ),
                "{err}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_photo_two_classes_reach_is_refused_naming_both() {
        // A new user's link to the folder above, inside a class: every other class's photos
        // were listed under that class too, and trained on with both labels.
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        photo(&r.join("cat/0.png"));
        photo(&r.join("dog/1.png"));
        std::os::unix::fs::symlink(r, r.join("cat/up")).unwrap();
        let err = list_image_folder(r).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(&err, Error::BadFormat { path, .. } if path.ends_with("dog/1.png"))
                && message.contains("`cat`")
                && message.contains("`dog`"),
            "{message}"
        );
        // The same photo twice in one class (a link to a sibling folder) is left alone, as
        // torchvision's ImageFolder lists it.
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        photo(&r.join("cat/a/0.png"));
        photo(&r.join("dog/1.png"));
        std::os::unix::fs::symlink(r.join("cat/a"), r.join("cat/b")).unwrap();
        assert_eq!(list_image_folder(r).unwrap().labels, [0, 0, 1]);
    }

    #[test]
    fn an_empty_class_is_refused_naming_it_and_what_it_holds() {
        let root = tempfile::tempdir().unwrap();
        photo(&root.path().join("cat/0.png"));
        std::fs::create_dir_all(root.path().join("dog")).unwrap();
        std::fs::write(root.path().join("dog/IMG_1.HEIC"), b"x").unwrap();
        let err = list_image_folder(root.path()).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, Error::NotFound { .. })
                && message.contains("`dog`")
                && message.contains("1 .HEIC"),
            "{message}"
        );
    }

    #[test]
    fn with_classes_maps_by_name_and_names_both_lists_when_it_cannot() {
        let root = tempfile::tempdir().unwrap();
        photo(&root.path().join("dog/0.png"));
        photo(&root.path().join("cat/0.png"));
        let listed = list_image_folder(root.path()).unwrap();
        let names: Vec<String> = ["bird", "dog", "cat"].map(String::from).to_vec();
        let mapped = listed.clone().with_classes(&names).unwrap();
        assert_eq!(mapped.labels, [2, 1]);
        assert_eq!(mapped.class_names, names);
        let err = listed.with_classes(&names[..2]).unwrap_err().to_string();
        assert!(
            err.contains(r#"["bird", "dog"]"#) && err.contains(r#"["cat", "dog"]"#),
            "{err}"
        );
    }
}
