//! The image's files after its layers so far: each layer's entries applied in order, with
//! the OCI whiteout rules, and what the keeper decided to keep of each regular file.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek};
use std::ops::Bound;
use std::sync::Arc;

use tar::EntryType;

use super::decompress::{self, Format, Metered, Seeking, Source, Watch};
use super::path::{self, Whiteout};
use super::{FileHead, Keeper, LayerError, Limits};

/// What a path is in the view.
#[derive(Debug, PartialEq, Eq)]
pub enum Node<T> {
    /// A regular file (or a hard link to one), with what the keeper kept of it: shared, so
    /// that a million hard links to one kept database cost a million pointers.
    File(Option<Arc<T>>),
    Dir,
    /// A symbolic link and its target, as the archive spells it.
    Symlink(String),
}

impl<T> Clone for Node<T> {
    fn clone(&self) -> Self {
        match self {
            Node::File(kept) => Node::File(kept.clone()),
            Node::Dir => Node::Dir,
            Node::Symlink(target) => Node::Symlink(target.clone()),
        }
    }
}

/// Bytes the tar crate may read between two entries (headers, padding, GNU long names,
/// pax records), which it holds in memory: real ones are a few KiB.
const META_MAX: u64 = 1 << 20;
/// Read from a compressed layer's blob at a time (it is read whole, in order).
const COMPRESSED_BUFFER: usize = 256 * 1024;

/// What a node costs the view beyond its path and link target (map and string overhead),
/// for [`Limits::max_view`].
const NODE_COST: u64 = 64;

/// The files of one image, built by applying its layers bottom to top.
#[derive(Debug)]
pub struct View<T> {
    /// The layers applied so far.
    lower: BTreeMap<String, Node<T>>,
    /// What the layer being applied wrote, kept apart so that whiteouts and opaque
    /// directories, which hide only lower layers, never have to look past it. Conflicts
    /// are settled as entries arrive (a replaced lower path is removed at once), so a path
    /// is looked up here first, then in `lower`; merged into `lower` when the layer ends.
    /// Both maps hold every node's parent directories.
    upper: BTreeMap<String, Node<T>>,
    limits: Limits,
    expanded: u64,
    entries: u64,
    /// What the nodes created so far cost, by [`NODE_COST`] and their names.
    weight: u64,
}

/// Why reading an entry stopped: an IO error is classified once the stream's watch says
/// what lay behind it.
enum Stop {
    Io(io::Error),
    Layer(LayerError),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        Stop::Io(e)
    }
}

impl From<LayerError> for Stop {
    fn from(e: LayerError) -> Self {
        Stop::Layer(e)
    }
}

impl<T> View<T> {
    /// An empty image; `limits` hold across all the layers applied to it.
    pub fn new(limits: Limits) -> Self {
        View {
            lower: BTreeMap::new(),
            upper: BTreeMap::new(),
            limits,
            expanded: 0,
            entries: 0,
            weight: 0,
        }
    }

    /// Reads one layer blob (gzip, zstd or plain tar, told by its first bytes), streaming
    /// (a plain one's unread bodies passed over by seeking), and applies it over the
    /// layers before. After an error the layer is not applied,
    /// though what it removed from lower layers may be gone: the image should not be
    /// scanned further. The caller names the layer in its report.
    pub fn apply<R, K>(&mut self, layer: R, keeper: &mut K) -> Result<(), LayerError>
    where
        R: Read + Seek,
        K: Keeper<Kept = T>,
    {
        self.upper.clear();
        let watch = Watch::new(self.expanded, self.limits.max_expanded);
        let mut format = Format::Tar;
        let mut source = Source {
            inner: layer,
            watch: &watch,
        };
        let result = decompress::sniff(&mut source)
            .map_err(Stop::Io)
            .and_then(|found| {
                format = found;
                if found == Format::Tar {
                    watch.set_seeks();
                    let stream = Metered {
                        inner: Seeking::new(source)?,
                        watch: &watch,
                    };
                    return self.read_tar(stream, tar::Archive::entries_with_seek, keeper, &watch);
                }
                let raw = io::BufReader::with_capacity(COMPRESSED_BUFFER, source);
                let stream = Metered {
                    inner: decompress::decoder(found, raw)?,
                    watch: &watch,
                };
                self.read_tar(stream, tar::Archive::entries, keeper, &watch)
            });
        self.expanded = watch.used();
        let upper = std::mem::take(&mut self.upper);
        match result {
            Ok(()) => {
                self.lower.extend(upper);
                Ok(())
            }
            Err(Stop::Layer(e)) => Err(e),
            Err(Stop::Io(e)) => Err(classify(e, &watch, format, self.limits)),
        }
    }

    /// What was kept of the regular file at `path`, symbolic links followed (in the
    /// directories too) as the image's own processes would see it; None if the path
    /// names nothing, no regular file, or a file nothing was kept of.
    pub fn kept(&self, path: &str) -> Option<&T> {
        let resolved = self.resolve(path)?;
        match self.lower.get(resolved.as_str())? {
            Node::File(kept) => kept.as_deref(),
            _ => None,
        }
    }

    /// The kept regular files in path order, each under its own path (no links followed).
    pub fn files(&self) -> impl Iterator<Item = (&str, &T)> {
        self.lower.iter().filter_map(|(path, node)| match node {
            Node::File(Some(kept)) => Some((path.as_str(), &**kept)),
            _ => None,
        })
    }

    /// The node at a normalized `path`, links not followed.
    pub fn get(&self, path: &str) -> Option<&Node<T>> {
        self.lower.get(path)
    }

    /// Uncompressed bytes of all layers applied so far, read or passed over (what the
    /// budget counts).
    pub fn expanded(&self) -> u64 {
        self.expanded
    }

    /// Every path and what it is, in path order: tests compare whole views with it.
    #[cfg(test)]
    pub(crate) fn listing(&self) -> Vec<String> {
        self.lower
            .iter()
            .map(|(path, node)| match node {
                Node::File(Some(_)) => format!("f {path}"),
                Node::File(None) => format!("- {path}"),
                Node::Dir => format!("d {path}"),
                Node::Symlink(target) => format!("l {path} -> {target}"),
            })
            .collect()
    }

    /// The path that `path` names once symbolic links are followed: absolute targets from
    /// the root, relative ones from the link's directory, `..` stopping at the root like a
    /// chroot. None if a component is missing or links nest deeper than the limit.
    fn resolve(&self, path: &str) -> Option<String> {
        // The components still to walk, the next one last.
        let mut todo: Vec<&str> = path.split('/').rev().collect();
        let mut at = String::new();
        let mut followed = 0u32;
        while let Some(part) = todo.pop() {
            match part {
                "" | "." => continue,
                ".." => {
                    let parent = at.rfind('/').unwrap_or(0);
                    at.truncate(parent);
                    continue;
                }
                _ => {}
            }
            let dir_len = at.len();
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            if let Node::Symlink(target) = self.lower.get(at.as_str())? {
                followed += 1;
                if followed > self.limits.max_symlink_depth {
                    return None;
                }
                at.truncate(if target.starts_with('/') { 0 } else { dir_len });
                todo.extend(target.split('/').rev());
            }
        }
        Some(at)
    }

    /// `entries` is the tar reader's walk: reading every body, or seeking past those unread.
    fn read_tar<R: Read, K: Keeper<Kept = T>>(
        &mut self,
        stream: R,
        entries: for<'a> fn(&'a mut tar::Archive<R>) -> io::Result<tar::Entries<'a, R>>,
        keeper: &mut K,
        watch: &Watch,
    ) -> Result<(), Stop> {
        let mut archive = tar::Archive::new(stream);
        let mut entries = entries(&mut archive)?;
        loop {
            watch.open_window(META_MAX);
            let next = entries.next();
            watch.close_window();
            let Some(entry) = next else { break };
            let mut entry = entry?;
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(LayerError::TooManyEntries {
                    limit: self.limits.max_entries,
                }
                .into());
            }
            // Refuse a body the budget cannot hold before reading any of it.
            if entry.size() > watch.remaining() {
                return Err(LayerError::TooLarge {
                    limit: self.limits.max_expanded,
                }
                .into());
            }
            self.entry(&mut entry, keeper, watch)?;
        }
        // Read to the end, so that a compressed stream's checksum and trailer are checked
        // (within the budget, like everything else).
        io::copy(&mut archive.into_inner(), &mut io::sink())?;
        Ok(())
    }

    fn entry<R: Read, K: Keeper<Kept = T>>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        keeper: &mut K,
        watch: &Watch,
    ) -> Result<(), Stop> {
        let kind = entry.header().entry_type();
        let acts = matches!(
            kind,
            EntryType::Regular
                | EntryType::Continuous
                | EntryType::GNUSparse
                | EntryType::Link
                | EntryType::Symlink
                | EntryType::Directory
                | EntryType::Char
                | EntryType::Block
                | EntryType::Fifo
        );
        let size = entry.size();
        let path = if acts {
            path::normalize(&entry.path_bytes(), self.limits.max_path)?
        } else {
            None
        };
        let Some(path) = path else {
            // Global pax headers, volume labels, unknown types and the root itself.
            return drain(entry, size, "", watch);
        };

        match path::whiteout(&path)? {
            Whiteout::None => {}
            Whiteout::Internal => return drain(entry, size, &path, watch),
            Whiteout::Remove { victim } => {
                drain(entry, size, &path, watch)?;
                self.parents(&path, false)?;
                remove(&mut self.lower, &victim, true);
                return Ok(());
            }
            Whiteout::Opaque { dir } => {
                drain(entry, size, &path, watch)?;
                // The marker's directory is a directory of this layer.
                self.parents(&path, true)?;
                remove(&mut self.lower, dir, false);
                return Ok(());
            }
        }

        let node = match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.parents(&path, true)?;
                // A sparse file's holes are made, not read: charge them all the same.
                let holes = match kind {
                    EntryType::GNUSparse => {
                        size.saturating_sub(entry.header().entry_size().unwrap_or(size))
                    }
                    _ => 0,
                };
                if !watch.charge(holes) {
                    return Err(LayerError::TooLarge {
                        limit: self.limits.max_expanded,
                    }
                    .into());
                }
                let mode = entry.header().mode().map_err(|e| LayerError::Corrupt {
                    reason: format!("entry `{path}` has an unreadable mode: {e}"),
                })?;
                let head = FileHead {
                    path: &path,
                    size,
                    mode,
                };
                let mut body = Body::new(entry, size, &path);
                let kept = keeper.keep(head, &mut body);
                if let Some(e) = body.failure.take() {
                    return Err(Stop::Io(e));
                }
                let kept = kept.map_err(|source| LayerError::Keeper {
                    path: path.clone(),
                    source,
                })?;
                if !watch.seeks() {
                    body.drain()?;
                }
                Node::File(kept.map(Arc::new))
            }
            EntryType::Link => {
                let target = link_target(entry, &path, self.limits.max_path)?;
                let target = path::normalize(target.as_bytes(), self.limits.max_path)?;
                let node =
                    target
                        .as_deref()
                        .and_then(|t| self.lookup(t))
                        .and_then(|node| match node {
                            Node::Dir => None,
                            other => Some(other.clone()),
                        });
                let Some(node) = node else {
                    return Err(LayerError::HardLinkMissing {
                        path,
                        target: target.unwrap_or_default(),
                    }
                    .into());
                };
                drain(entry, size, &path, watch)?;
                self.parents(&path, true)?;
                node
            }
            EntryType::Symlink => {
                let target = link_target(entry, &path, self.limits.max_path)?;
                if target.is_empty() {
                    return Err(LayerError::Corrupt {
                        reason: format!("symbolic link `{path}` has an empty target"),
                    }
                    .into());
                }
                if path::relative_target_escapes(&path, &target) {
                    return Err(LayerError::SymlinkEscapes { path, target }.into());
                }
                drain(entry, size, &path, watch)?;
                self.parents(&path, true)?;
                Node::Symlink(target)
            }
            EntryType::Directory => {
                drain(entry, size, &path, watch)?;
                self.parents(&path, true)?;
                Node::Dir
            }
            _ => {
                // Devices and fifos hold no package data, but they do replace what a lower
                // layer had at their path.
                drain(entry, size, &path, watch)?;
                self.parents(&path, true)?;
                remove(&mut self.upper, &path, true);
                remove(&mut self.lower, &path, true);
                return Ok(());
            }
        };
        self.put(path, node)?;
        Ok(())
    }

    /// The node at `path` as this layer leaves it so far.
    fn lookup(&self, path: &str) -> Option<&Node<T>> {
        self.upper.get(path).or_else(|| self.lower.get(path))
    }

    /// Checks the directories above `path`: a symbolic link among them refuses the entry.
    /// With `create`, they become directories of this layer (made if missing, replacing a
    /// file). Each entry usually costs one lookup: above a directory of this layer, all
    /// are directories of this layer.
    fn parents(&mut self, path: &str, create: bool) -> Result<(), LayerError> {
        let ends: Vec<usize> = path.match_indices('/').map(|(end, _)| end).collect();
        let mut first = 0;
        for (i, &end) in ends.iter().enumerate().rev() {
            let dir = path.get(..end).unwrap_or_default();
            match self.upper.get(dir) {
                Some(Node::Dir) => {
                    first = i + 1;
                    break;
                }
                Some(Node::Symlink(_)) => return Err(through(path, dir)),
                _ => {}
            }
        }
        for &end in ends.get(first..).unwrap_or_default() {
            let dir = path.get(..end).unwrap_or_default();
            if !self.upper.contains_key(dir) {
                match self.lower.get(dir) {
                    Some(Node::Symlink(_)) => return Err(through(path, dir)),
                    Some(Node::File(_)) if create => {
                        self.lower.remove(dir);
                    }
                    Some(Node::Dir) => {}
                    _ if create => {}
                    // Missing, or a file: nothing of lower layers lies below.
                    _ => return Ok(()),
                }
                if create {
                    self.charge(dir.len())?;
                }
            }
            if create {
                self.upper.insert(dir.to_string(), Node::Dir);
            }
        }
        Ok(())
    }

    /// Sets `path` to `node` for this layer. Anything but a directory over a directory
    /// replaces what was there with all below it.
    fn put(&mut self, path: String, node: Node<T>) -> Result<(), LayerError> {
        let dir = matches!(node, Node::Dir);
        match self.upper.get(path.as_str()) {
            Some(Node::Dir) if dir => return Ok(()),
            Some(Node::Dir) => remove(&mut self.upper, &path, false),
            Some(_) => {}
            None => {
                let target = match &node {
                    Node::Symlink(target) => target.len(),
                    _ => 0,
                };
                self.charge(path.len().saturating_add(target))?;
            }
        }
        match self.lower.get(path.as_str()) {
            Some(Node::Dir) if dir => {}
            Some(_) => remove(&mut self.lower, &path, true),
            None => {}
        }
        self.upper.insert(path, node);
        Ok(())
    }

    /// Counts a new node of `name_len` bytes of names against [`Limits::max_view`].
    fn charge(&mut self, name_len: usize) -> Result<(), LayerError> {
        let cost = NODE_COST.saturating_add(name_len as u64);
        self.weight = self.weight.saturating_add(cost);
        if self.weight > self.limits.max_view {
            return Err(LayerError::ViewTooLarge {
                limit: self.limits.max_view,
            });
        }
        Ok(())
    }
}

fn through(path: &str, link: &str) -> LayerError {
    LayerError::ThroughSymlink {
        path: path.to_string(),
        link: link.to_string(),
    }
}

/// Removes from `map` what is below `path` (the root if empty), and `path` itself with
/// `itself`.
fn remove<T>(map: &mut BTreeMap<String, T>, path: &str, itself: bool) {
    if path.is_empty() {
        map.clear();
        return;
    }
    let low = format!("{path}/");
    // '0' follows '/': this range is exactly the paths that start with `path/`.
    let high = format!("{path}0");
    let doomed: Vec<String> = map
        .range::<str, _>((
            Bound::Included(low.as_str()),
            Bound::Excluded(high.as_str()),
        ))
        .map(|(p, _)| p.clone())
        .collect();
    for p in doomed {
        map.remove(&p);
    }
    if itself {
        map.remove(path);
    }
}

/// A link entry's target as text, its length checked.
fn link_target<R: Read>(
    entry: &tar::Entry<'_, R>,
    path: &str,
    max_path: usize,
) -> Result<String, LayerError> {
    let Some(raw) = entry.link_name_bytes() else {
        return Err(LayerError::Corrupt {
            reason: format!("link `{path}` has no target"),
        });
    };
    Ok(path::checked_text(&raw, max_path)?.into_owned())
}

/// Reads what remains of an entry's body into a small buffer, never holding it (unless
/// the tar reader seeks past it).
fn drain<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    size: u64,
    path: &str,
    watch: &Watch,
) -> Result<(), Stop> {
    if watch.seeks() {
        return Ok(());
    }
    let mut body = Body::new(entry, size, path);
    body.drain()?;
    Ok(())
}

/// An entry's body that fails, rather than ending quietly, when the stream ends before
/// the size its header declared. The failure is also kept aside, so that truncation
/// surfacing through the keeper is reported as truncation, not as the keeper's refusal.
struct Body<'e, 'p, R> {
    inner: &'e mut R,
    left: u64,
    size: u64,
    path: &'p str,
    failure: Option<io::Error>,
}

impl<'e, 'p, R: Read> Body<'e, 'p, R> {
    fn new(inner: &'e mut R, size: u64, path: &'p str) -> Self {
        Body {
            inner,
            left: size,
            size,
            path,
            failure: None,
        }
    }

    fn drain(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while self.read(&mut buf)? > 0 {}
        match self.failure.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl<R: Read> Read for Body<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let got = match buf.get_mut(..want) {
            Some(part) => self.inner.read(part),
            None => Ok(0),
        };
        let failure = match got {
            Ok(0) => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the stream ends inside `{}` ({} of {} bytes)",
                    self.path,
                    self.size - self.left,
                    self.size
                ),
            ),
            Ok(n) => {
                self.left = self.left.saturating_sub(n as u64);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => e,
        };
        let told = io::Error::new(failure.kind(), failure.to_string());
        self.failure = Some(failure);
        Err(told)
    }
}

/// What an IO error while reading a layer means, from what the streams saw.
fn classify(e: io::Error, watch: &Watch, format: Format, limits: Limits) -> LayerError {
    if let Some(source) = watch.take_source_error() {
        return LayerError::Read { source };
    }
    if watch.over() {
        return LayerError::TooLarge {
            limit: limits.max_expanded,
        };
    }
    if watch.window_over() {
        return LayerError::Corrupt {
            reason: format!(
                "{}: tar extension headers (long names, pax records) exceed {}",
                format.name(),
                super::error::human_bytes(META_MAX)
            ),
        };
    }
    let reason = format!("{}: {}", format.name(), tidy(&e.to_string()));
    if e.kind() == io::ErrorKind::UnexpectedEof || watch.ended() {
        LayerError::Truncated { reason }
    } else {
        LayerError::Corrupt { reason }
    }
}

/// A reason fit for a message: parsers quote the bytes they choke on, which in a hostile
/// layer are anything.
fn tidy(reason: &str) -> String {
    const MAX: usize = 160;
    let mut out: String = reason
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if reason.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}
