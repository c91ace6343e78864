//! Packages found in the view of an image's files.
