//! Finding the subjects of a BraTS folder and the files of each: the two naming schemes of the
//! challenges, `.nii.gz` or `.nii`, one subfolder per subject.

use std::path::{Path, PathBuf};

use super::{BratsError, Contrast};

/// The file naming of a subject folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Naming {
    /// BraTS 2018–2021: `<subject>_{flair,t1,t1ce,t2,seg}.nii.gz`; labels 0, 1, 2, 4.
    Brats2021,
    /// BraTS 2023: `<subject>-{t2f,t1n,t1c,t2w,seg}.nii.gz`; labels 0, 1, 2, 3 (4 accepted too).
    Brats2023,
}

impl Naming {
    /// Both namings, in the order files are matched against them.
    pub const ALL: [Naming; 2] = [Self::Brats2021, Self::Brats2023];

    /// The character between the subject and the volume's tag.
    pub fn separator(self) -> char {
        match self {
            Self::Brats2021 => '_',
            Self::Brats2023 => '-',
        }
    }

    /// The tag of a volume in this naming: an image of `contrast`, or the segmentation (`None`).
    pub fn tag(self, contrast: Option<Contrast>) -> &'static str {
        match (self, contrast) {
            (_, None) => "seg",
            (Self::Brats2021, Some(c)) => c.name(),
            (Self::Brats2023, Some(Contrast::Flair)) => "t2f",
            (Self::Brats2023, Some(Contrast::T1)) => "t1n",
            (Self::Brats2023, Some(Contrast::T1ce)) => "t1c",
            (Self::Brats2023, Some(Contrast::T2)) => "t2w",
        }
    }

    /// The file name of a volume of `subject`: `<subject><sep><tag>.nii.gz`, or `.nii` when not
    /// `gzip`.
    pub fn file_name(self, subject: &str, contrast: Option<Contrast>, gzip: bool) -> String {
        let extension = if gzip { "nii.gz" } else { "nii" };
        format!(
            "{subject}{}{}.{extension}",
            self.separator(),
            self.tag(contrast)
        )
    }
}

/// The two volumes of one subject that the source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The subject folder's name.
    pub name: String,
    /// The subject folder.
    pub dir: PathBuf,
    /// The naming of its segmentation file (which decides whether label 3 is allowed).
    pub naming: Naming,
    /// The image of the chosen contrast.
    pub image: PathBuf,
    /// The segmentation.
    pub segmentation: PathBuf,
}

/// The subjects of a BraTS folder, sorted by folder name, with the files of one contrast.
#[derive(Debug, Clone)]
pub struct BratsFolder {
    dir: PathBuf,
    contrast: Contrast,
    subjects: Vec<Subject>,
}

/// The stem of a NIfTI file name (`x` of `x.nii.gz` or `x.nii`), if it is one.
fn nifti_stem(name: &str) -> Option<&str> {
    name.strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
}

/// The entries of `dir` sorted by name, hidden ones (`.` first) left out.
fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, BratsError> {
    let io = |source| BratsError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            entries.push((name, entry.path()));
        }
    }
    entries.sort();
    Ok(entries)
}

impl BratsFolder {
    /// Finds the subjects of `dir` and their `contrast` image and segmentation.
    ///
    /// A subject is a subfolder holding at least one `.nii`/`.nii.gz` file (other subfolders and
    /// hidden entries are passed over); it must hold exactly one image of `contrast` and one
    /// segmentation in either naming, else the error names the folder and the files expected.
    pub fn open(dir: &Path, contrast: Contrast) -> Result<Self, BratsError> {
        if !dir.is_dir() {
            return Err(BratsError::NotAFolder(dir.to_path_buf()));
        }
        let mut subjects = Vec::new();
        for (name, path) in sorted_entries(dir)? {
            if !path.is_dir() {
                continue;
            }
            let files: Vec<(String, PathBuf)> = sorted_entries(&path)?
                .into_iter()
                .filter(|(n, p)| nifti_stem(n).is_some() && p.is_file())
                .collect();
            if files.is_empty() {
                continue;
            }
            let image = find(&path, &name, &files, Some(contrast))?;
            let (naming, segmentation) = find(&path, &name, &files, None)?;
            subjects.push(Subject {
                name,
                dir: path,
                naming,
                image: image.1,
                segmentation,
            });
        }
        if subjects.is_empty() {
            return Err(BratsError::NoSubjects(dir.to_path_buf()));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            contrast,
            subjects,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The contrast whose images were found.
    pub fn contrast(&self) -> Contrast {
        self.contrast
    }

    /// The subjects, sorted by folder name.
    pub fn subjects(&self) -> &[Subject] {
        &self.subjects
    }
}

/// The one file of `files` (in subject folder `dir` named `subject`) that is the image of
/// `contrast` (or the segmentation, for `None`), with its naming.
fn find(
    dir: &Path,
    subject: &str,
    files: &[(String, PathBuf)],
    contrast: Option<Contrast>,
) -> Result<(Naming, PathBuf), BratsError> {
    let what = match contrast {
        Some(c) => format!("{c} image"),
        None => "segmentation".to_string(),
    };
    let mut found: Option<(Naming, PathBuf)> = None;
    for (name, path) in files {
        let Some(stem) = nifti_stem(name) else {
            continue;
        };
        for naming in Naming::ALL {
            let ending = format!("{}{}", naming.separator(), naming.tag(contrast));
            if stem.ends_with(&ending) {
                if let Some((_, first)) = &found {
                    return Err(BratsError::Ambiguous {
                        dir: dir.to_path_buf(),
                        what,
                        first: first.clone(),
                        second: path.clone(),
                    });
                }
                found = Some((naming, path.clone()));
            }
        }
    }
    found.ok_or_else(|| BratsError::MissingFile {
        dir: dir.to_path_buf(),
        expected: format!(
            "{} or {} (.nii also accepted)",
            Naming::Brats2021.file_name(subject, contrast, true),
            Naming::Brats2023.file_name(subject, contrast, true)
        ),
        hint: if contrast.is_none() {
            "; the evaluation needs the tumour labels, which BraTS validation and test sets do \
             not ship: use a training set, or leave this subject out"
        } else {
            "; choose a contrast every subject has, or leave this subject out"
        },
        what,
    })
}
