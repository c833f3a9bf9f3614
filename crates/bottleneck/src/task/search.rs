//! Similarity search in latent space: a catalogue (`.bnidx`) holds the bottleneck codes of
//! a collection of images or table rows, where each came from, and the model that made them,
//! so a query needs nothing else. Small catalogues are searched exactly; from
//! [`ANN_THRESHOLD`] items on, an HNSW graph (hnsw_rs) answers instead. Adding items inserts
//! them into the existing graph rather than rebuilding it.
//!
//! The file is a safetensors container: `codes` (f32, items x latent), `names` (UTF-8,
//! NUL-separated), `model` (the model file's bytes) and, with a graph, `hnsw_graph` and
//! `hnsw_data` (hnsw_rs's dump), plus [`IndexMeta`] as JSON under the metadata key
//! `bottleneck_index`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use burn::prelude::Device;
use hnsw_rs::anndists::dist::DistL2;
use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::{AnnT, Hnsw};
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use crate::data::images::find_images;
use crate::data::table::is_table_path;
use crate::error::{Error, Result};
use crate::model::file::DataKind;
use crate::progress::Progress;
use crate::task::detect::Detector;
use crate::task::model::Model;
use crate::task::table::TableModel;

/// Version of the catalogue layout; other versions are refused with a message.
pub const INDEX_VERSION: u32 = 1;
const META_KEY: &str = "bottleneck_index";
/// Catalogues with at least this many items are searched through an HNSW graph. Below it
/// exact search is fast enough and always right (measured with `examples/search_latency`:
/// see bench/RESULTS.md).
pub const ANN_THRESHOLD: usize = 10_000;
/// Links per node of the HNSW graph.
const MAX_CONNECTIONS: usize = 16;
/// Candidates kept while building the graph.
const EF_CONSTRUCTION: usize = 200;
/// Candidates kept while searching the graph, at least (more when k is larger).
pub const EF_SEARCH: usize = 64;

/// What the catalogue file says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexMeta {
    pub format_version: u32,
    /// What the items are: `images` or `table`.
    pub kind: String,
    pub latent: usize,
    pub items: usize,
    /// Whether the catalogue carries an HNSW graph.
    pub graph: bool,
    /// Size from which the catalogue gets a graph.
    pub graph_from: usize,
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// Where the item came from: an image path, or `TABLE:ID` (the row number without an id
    /// column).
    pub name: String,
    /// Position of the item in the catalogue.
    pub item: usize,
    /// Euclidean distance between the codes.
    pub distance: f32,
}

/// A catalogue of bottleneck codes.
pub struct Catalogue {
    meta: IndexMeta,
    model: Vec<u8>,
    names: Vec<String>,
    codes: Vec<f32>,
    /// hnsw_rs's dump: the graph file and the data file.
    graph: Option<(Vec<u8>, Vec<u8>)>,
}

/// The model a catalogue encodes with.
enum Encoder {
    Images(Box<Detector>),
    Table(Box<TableModel>),
}

impl Encoder {
    fn from_bytes(label: &Path, bytes: Vec<u8>, device: &Device) -> Result<(Self, String)> {
        let encoder = match Model::from_bytes(label, bytes, device)? {
            Model::TableDetector(t) => Self::Table(t),
            Model::ImageDetector(d) => Self::Images(d),
            other @ (Model::ImageDenoiser(_) | Model::AudioDenoiser(_)) => {
                return Err(Error::Invalid(format!(
                    "{}: {} has no bottleneck codes to search; index with a detector \
                     (a model trained for detection)",
                    label.display(),
                    other.kind()
                )));
            }
            other @ Model::AudioDetector(_) => {
                return Err(Error::Invalid(format!(
                    "{}: {}; search indexes images and table rows",
                    label.display(),
                    other.kind()
                )));
            }
        };
        let kind = match encoder {
            Self::Table(_) => DataKind::Table,
            Self::Images(_) => DataKind::Images,
        };
        Ok((encoder, kind.name().to_string()))
    }

    fn latent(&self) -> usize {
        match self {
            Self::Images(d) => d.meta().spec.latent,
            Self::Table(t) => t.meta().spec.latent,
        }
    }

    /// Codes of every image of a file or folder, or every row of a table, with their names.
    /// Returns the samples skipped (under `skip_bad`).
    fn encode(
        &self,
        data: &Path,
        skip_bad: bool,
        progress: &dyn Progress,
        names: &mut Vec<String>,
        codes: &mut Vec<f32>,
    ) -> Result<usize> {
        let table = is_table_path(data);
        // Names are absolute, so the same file is the same item whatever folder `index`
        // or `search` runs from or however the path was typed.
        let data = &std::fs::canonicalize(data).map_err(|_| Error::Missing {
            path: data.to_path_buf(),
        })?;
        match self {
            Self::Images(_) if table => Err(Error::Invalid(format!(
                "{} is a table, but the model reads images",
                data.display()
            ))),
            Self::Table(_) if !table => Err(Error::Invalid(format!(
                "{} is not a table file (.csv, .tsv, .parquet, .npy), but the model reads \
                 table rows",
                data.display()
            ))),
            Self::Images(d) => {
                let paths = find_images(data)?;
                d.encode_paths(&paths, skip_bad, progress, |index, code| {
                    names.push(paths[index].display().to_string());
                    codes.extend_from_slice(code);
                    Ok(())
                })
            }
            Self::Table(t) => t.encode_each(data, skip_bad, progress, |_, ids, chunk| {
                names.extend(ids.iter().map(|id| format!("{}:{id}", data.display())));
                codes.extend_from_slice(chunk);
                Ok(())
            }),
        }
    }
}

impl Catalogue {
    /// Encodes every sample of `data` with the model file at `model`; the catalogue gets a
    /// search graph once it holds `graph_from` items ([`ANN_THRESHOLD`] by default). Fails when the model
    /// is not an anomaly-detection model (a denoiser has no codes), when `data` does not fit
    /// it, or when nothing could be encoded. Returns the catalogue and the samples skipped.
    pub fn build(
        model: &Path,
        data: &Path,
        graph_from: usize,
        skip_bad: bool,
        device: &Device,
        progress: &dyn Progress,
    ) -> Result<(Self, usize)> {
        let bytes = std::fs::read(model).map_err(|e| Error::io(model, e))?;
        let (encoder, kind) = Encoder::from_bytes(model, bytes.clone(), device)?;
        let mut catalogue = Self {
            meta: IndexMeta {
                format_version: INDEX_VERSION,
                kind,
                latent: encoder.latent(),
                items: 0,
                graph: false,
                graph_from: graph_from.max(1),
            },
            model: bytes,
            names: Vec::new(),
            codes: Vec::new(),
            graph: None,
        };
        let (added, _, skipped) = catalogue.add_with(&encoder, data, skip_bad, progress)?;
        if added == 0 {
            return Err(Error::Invalid(format!(
                "{}: nothing to index",
                data.display()
            )));
        }
        Ok((catalogue, skipped))
    }

    /// Adds the samples of `data`, encoded with the catalogue's own model, leaving out names
    /// already in it. A catalogue with a graph gets the new items inserted into it; one that
    /// reaches its `graph_from` size gets its graph built. Returns items added, duplicates left
    /// out and samples skipped.
    pub fn append(
        &mut self,
        data: &Path,
        skip_bad: bool,
        device: &Device,
        progress: &dyn Progress,
    ) -> Result<(usize, usize, usize)> {
        self.add_with(&self.encoder(device)?, data, skip_bad, progress)
    }

    fn add_with(
        &mut self,
        encoder: &Encoder,
        data: &Path,
        skip_bad: bool,
        progress: &dyn Progress,
    ) -> Result<(usize, usize, usize)> {
        let mut names = Vec::new();
        let mut codes = Vec::new();
        let skipped = encoder.encode(data, skip_bad, progress, &mut names, &mut codes)?;
        let d = self.meta.latent;
        let known: HashSet<&str> = self.names.iter().map(String::as_str).collect();
        let mut fresh = Vec::new();
        let mut duplicates = 0;
        let mut seen = HashSet::new();
        for (i, name) in names.iter().enumerate() {
            if known.contains(name.as_str()) || !seen.insert(name.as_str()) {
                duplicates += 1;
            } else {
                fresh.push(i);
            }
        }
        let first = self.names.len();
        for &i in &fresh {
            self.names.push(names[i].clone());
            self.codes.extend_from_slice(&codes[i * d..(i + 1) * d]);
        }
        self.meta.items = self.names.len();
        if self.graph.is_some() && !fresh.is_empty() {
            progress.stage("adding to the graph", fresh.len() as u64);
            self.graph = Some(self.grow_graph(first)?);
            progress.finish();
        } else if self.graph.is_none() && self.names.len() >= self.meta.graph_from {
            progress.stage("building the graph", self.names.len() as u64);
            self.graph = Some(self.grow_graph(0)?);
            progress.finish();
        }
        self.meta.graph = self.graph.is_some();
        Ok((fresh.len(), duplicates, skipped))
    }

    /// Inserts items `first..` into the graph (a new one when `first` is 0) and returns its
    /// dump.
    fn grow_graph(&self, first: usize) -> Result<(Vec<u8>, Vec<u8>)> {
        let d = self.meta.latent;
        let items: Vec<(&[f32], usize)> = (first..self.names.len())
            .map(|i| (&self.codes[i * d..(i + 1) * d], i))
            .collect();
        if first == 0 {
            let hnsw: Hnsw<f32, DistL2> = Hnsw::new(
                MAX_CONNECTIONS,
                self.names.len(),
                16,
                EF_CONSTRUCTION,
                DistL2 {},
            );
            hnsw.parallel_insert_slice(&items);
            Scratch::new()?.dump(&hnsw)
        } else {
            self.with_graph(|hnsw| {
                let hnsw = hnsw.expect("a graph to grow");
                hnsw.parallel_insert_slice(&items);
                Scratch::new()?.dump(hnsw)
            })?
        }
    }

    /// The first `n` items as a catalogue of their own, with a graph built afresh when
    /// `graph` is true; for benchmarks that compare exact and graph search by size.
    pub fn truncated(&self, n: usize, graph: bool) -> Result<Self> {
        let n = n.min(self.len());
        let mut sub = Self {
            meta: IndexMeta {
                items: n,
                graph,
                ..self.meta.clone()
            },
            model: self.model.clone(),
            names: self.names[..n].to_vec(),
            codes: self.codes[..n * self.meta.latent].to_vec(),
            graph: None,
        };
        if graph {
            sub.graph = Some(sub.grow_graph(0)?);
        }
        Ok(sub)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when the catalogue holds no item.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Gives the catalogue a graph from `items` items on; the next addition builds it when
    /// the catalogue is that large already.
    pub fn set_graph_from(&mut self, items: usize) {
        self.meta.graph_from = items.max(1);
    }

    /// The catalogue's description.
    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }

    /// The bytes of the model file the codes were made with.
    pub fn model_bytes(&self) -> &[u8] {
        &self.model
    }

    /// The catalogue's own model, loaded on `device`.
    fn encoder(&self, device: &Device) -> Result<Encoder> {
        let label = Path::new("catalogue model");
        Ok(Encoder::from_bytes(label, self.model.clone(), device)?.0)
    }

    /// Encodes the samples of `query` (an image, a folder of images, or a table) with the
    /// catalogue's model. Returns their names and codes. Fails when the query's kind does
    /// not fit the model, or a table lacks the model's columns.
    pub fn encode_queries(
        &self,
        query: &Path,
        skip_bad: bool,
        device: &Device,
        progress: &dyn Progress,
    ) -> Result<(Vec<String>, Vec<f32>, usize)> {
        let encoder = self.encoder(device)?;
        let mut names = Vec::new();
        let mut codes = Vec::new();
        let skipped = encoder.encode(query, skip_bad, progress, &mut names, &mut codes)?;
        Ok((names, codes, skipped))
    }

    /// The `k` nearest items of each query code (`queries x latent`), nearest first: through
    /// the graph when the catalogue has one and `exact` is false, by comparing with every
    /// item otherwise. Fails when the codes' size is not the catalogue's.
    pub fn search(&self, queries: &[f32], k: usize, exact: bool) -> Result<Vec<Vec<Hit>>> {
        let d = self.meta.latent;
        if !queries.len().is_multiple_of(d) {
            return Err(Error::Invalid(format!(
                "query codes of {} values do not split into codes of {d}",
                queries.len()
            )));
        }
        let k = k.min(self.len());
        match (&self.graph, exact) {
            (Some(_), false) => self.with_graph(|graph| {
                self.search_graph(graph.expect("the catalogue has a graph"), queries, k)
            }),
            _ => Ok(self.search_exact(queries, k)),
        }
    }

    /// Graph search of loaded `hnsw`; for benchmarks that time queries apart from loading.
    pub fn search_graph(
        &self,
        hnsw: &Hnsw<f32, DistL2>,
        queries: &[f32],
        k: usize,
    ) -> Vec<Vec<Hit>> {
        let d = self.meta.latent;
        let ef = EF_SEARCH.max(2 * k);
        queries
            .par_chunks(d)
            .map(|q| {
                hnsw.search(q, k, ef)
                    .into_iter()
                    .map(|n| self.hit(n.d_id, n.distance))
                    .collect()
            })
            .collect()
    }

    /// Runs `f` with the catalogue's graph loaded (None without a graph).
    pub fn with_graph<T>(&self, f: impl FnOnce(Option<&Hnsw<f32, DistL2>>) -> T) -> Result<T> {
        match &self.graph {
            None => Ok(f(None)),
            Some(graph) => {
                let scratch = Scratch::new()?;
                let mut io = scratch.load(graph)?;
                let damaged = |why: String| {
                    Error::Invalid(format!(
                        "the catalogue's graph is damaged: {why}; index again"
                    ))
                };
                // hnsw_rs panics on some damaged dumps (and searches of a damaged graph)
                // instead of failing: a damaged part of the file is an error, not a crash.
                let outcome = crate::error::catch_quietly(move || {
                    let hnsw = io.load_hnsw::<f32, DistL2>().map_err(|e| e.to_string())?;
                    Ok(f(Some(&hnsw)))
                });
                match outcome {
                    Ok(Ok(out)) => Ok(out),
                    Ok(Err(why)) => Err(damaged(why)),
                    Err(_) => Err(damaged("hnsw_rs could not read it".into())),
                }
            }
        }
    }

    /// Exact search: every item compared with every query.
    pub fn search_exact(&self, queries: &[f32], k: usize) -> Vec<Vec<Hit>> {
        let d = self.meta.latent;
        queries
            .par_chunks(d)
            .map(|q| {
                let mut dist: Vec<(f32, usize)> = self
                    .codes
                    .chunks(d)
                    .enumerate()
                    .map(|(i, c)| (c.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum(), i))
                    .collect();
                let k = k.min(dist.len());
                if k == 0 {
                    return Vec::new();
                }
                dist.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                dist.truncate(k);
                dist.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                dist.into_iter()
                    .map(|(d2, i)| self.hit(i, d2.sqrt()))
                    .collect()
            })
            .collect()
    }

    fn hit(&self, item: usize, distance: f32) -> Hit {
        Hit {
            name: self.names[item].clone(),
            item,
            distance,
        }
    }

    /// Writes the catalogue to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string(&self.meta).map_err(|e| Error::Invalid(e.to_string()))?;
        let names = self.names.join("\0").into_bytes();
        let codes: Vec<u8> = self.codes.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bad =
            |e: safetensors::SafeTensorError| Error::Invalid(format!("{}: {e}", path.display()));
        let d = self.meta.latent;
        let mut tensors = vec![
            (
                "codes".to_string(),
                TensorView::new(Dtype::F32, vec![self.len(), d], &codes).map_err(bad)?,
            ),
            (
                "names".to_string(),
                TensorView::new(Dtype::U8, vec![names.len()], &names).map_err(bad)?,
            ),
            (
                "model".to_string(),
                TensorView::new(Dtype::U8, vec![self.model.len()], &self.model).map_err(bad)?,
            ),
        ];
        if let Some((graph, data)) = &self.graph {
            tensors.push((
                "hnsw_graph".into(),
                TensorView::new(Dtype::U8, vec![graph.len()], graph).map_err(bad)?,
            ));
            tensors.push((
                "hnsw_data".into(),
                TensorView::new(Dtype::U8, vec![data.len()], data).map_err(bad)?,
            ));
        }
        let metadata = std::collections::HashMap::from([(META_KEY.to_string(), json)]);
        let bytes = safetensors::serialize(tensors, Some(metadata))
            .and_then(|b| crate::model::file::seal(&b, META_KEY))
            .map_err(|e| Error::Invalid(format!("{}: cannot write: {e}", path.display())))?;
        crate::io::write_bytes_atomic(path, &bytes)
    }

    /// Reads the catalogue at `path`. Fails, naming the file, when it is missing, not a
    /// catalogue, from another format version, or damaged.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::Missing {
                path: path.to_path_buf(),
            });
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |reason: String| {
            Error::Invalid(format!(
                "{}: not a bottleneck catalogue: {reason}",
                path.display()
            ))
        };
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        crate::model::file::verify(&bytes, META_KEY).map_err(bad)?;
        let json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| bad("no catalogue metadata (is it a model file?)".into()))?;
        let meta: IndexMeta =
            serde_json::from_str(json).map_err(|e| bad(format!("bad metadata ({e})")))?;
        if meta.format_version != INDEX_VERSION {
            return Err(bad(format!(
                "format version {}, this build reads {INDEX_VERSION}; index again",
                meta.format_version
            )));
        }
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let raw = |name: &str| -> Result<Vec<u8>> {
            Ok(st
                .tensor(name)
                .map_err(|_| bad(format!("no '{name}' part")))?
                .data()
                .to_vec())
        };
        let codes: Vec<f32> = raw("codes")?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let names_raw =
            String::from_utf8(raw("names")?).map_err(|_| bad("names are not UTF-8".into()))?;
        let names: Vec<String> = if names_raw.is_empty() {
            Vec::new()
        } else {
            names_raw.split('\0').map(String::from).collect()
        };
        if names.len() != meta.items || codes.len() != meta.items * meta.latent {
            return Err(bad(format!(
                "{} names and {} code values for {} items of {}",
                names.len(),
                codes.len(),
                meta.items,
                meta.latent
            )));
        }
        let graph = if meta.graph {
            Some((raw("hnsw_graph")?, raw("hnsw_data")?))
        } else {
            None
        };
        Ok(Self {
            model: raw("model")?,
            meta,
            names,
            codes,
            graph,
        })
    }
}

/// A private scratch folder for hnsw_rs's two-file dumps, removed when dropped.
struct Scratch {
    dir: PathBuf,
}

const BASENAME: &str = "graph";

impl Scratch {
    fn new() -> Result<Self> {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("bottleneck-hnsw-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Self { dir })
    }

    fn dump(&self, hnsw: &Hnsw<f32, DistL2>) -> Result<(Vec<u8>, Vec<u8>)> {
        let name = hnsw
            .file_dump(&self.dir, BASENAME)
            .map_err(|e| Error::Invalid(format!("cannot write the search graph: {e}")))?;
        let read = |suffix: &str| {
            let p = self.dir.join(format!("{name}.hnsw.{suffix}"));
            std::fs::read(&p).map_err(|e| Error::io(&p, e))
        };
        Ok((read("graph")?, read("data")?))
    }

    fn load(&self, (graph, data): &(Vec<u8>, Vec<u8>)) -> Result<HnswIo> {
        for (suffix, bytes) in [("graph", graph), ("data", data)] {
            let p = self.dir.join(format!("{BASENAME}.hnsw.{suffix}"));
            std::fs::write(&p, bytes).map_err(|e| Error::io(&p, e))?;
        }
        Ok(HnswIo::new(&self.dir, BASENAME))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{SENSORS, sensor_rows};
    use crate::progress::Silent;
    use crate::task::TableParams;

    fn write_rows(path: &Path, n: usize, seed: u64) {
        let mut text = SENSORS.join(",") + "\n";
        for (row, _) in sensor_rows(n, false, seed) {
            let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            text += &(cells.join(",") + "\n");
        }
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn catalogue_finds_items_grows_its_graph_and_refuses_other_kinds() {
        let dir = std::env::temp_dir().join(format!("bn-search-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        write_rows(&dir.join("train.csv"), 300, 1);
        write_rows(&dir.join("a.csv"), 150, 2);
        write_rows(&dir.join("b.csv"), 60, 3);
        let device = Device::flex();
        let params = TableParams {
            epochs: Some(3),
            ..TableParams::default()
        };
        let model = dir.join("m.safetensors");
        TableModel::fit(&dir.join("train.csv"), &params, &device, &Silent)
            .unwrap()
            .save(&model)
            .unwrap();

        let (mut cat, _) =
            Catalogue::build(&model, &dir.join("a.csv"), 100, false, &device, &Silent).unwrap();
        assert_eq!(cat.len(), 150);
        assert!(cat.meta().graph, "150 items reach graph_from 100");
        let (added, dup, _) = cat
            .append(&dir.join("b.csv"), false, &device, &Silent)
            .unwrap();
        assert_eq!((added, dup), (60, 0));
        let (added, dup, _) = cat
            .append(&dir.join("b.csv"), false, &device, &Silent)
            .unwrap();
        assert_eq!((added, dup), (0, 60), "names already there are left out");

        let path = dir.join("c.bnidx");
        cat.save(&path).unwrap();
        let cat = Catalogue::open(&path).unwrap();
        assert_eq!(cat.len(), 210);
        let (names, codes, _) = cat
            .encode_queries(&dir.join("b.csv"), false, &device, &Silent)
            .unwrap();
        assert_eq!(names[0], format!("{}:1", dir.join("b.csv").display()));
        let exact = cat.search(&codes, 5, true).unwrap();
        let graph = cat.search(&codes, 5, false).unwrap();
        // Every appended row finds itself first, through the grown graph too.
        for (i, (e, g)) in exact.iter().zip(&graph).enumerate() {
            assert_eq!(e[0].name, names[i]);
            assert_eq!(e[0].distance, 0.0);
            assert_eq!(g[0].item, e[0].item);
            assert!(e.windows(2).all(|w| w[0].distance <= w[1].distance));
        }
        let found: usize = exact
            .iter()
            .zip(&graph)
            .map(|(e, g)| {
                g.iter()
                    .filter(|h| e.iter().any(|x| x.item == h.item))
                    .count()
            })
            .sum();
        assert!(
            found as f64 / (5.0 * exact.len() as f64) > 0.9,
            "recall {found}"
        );

        // A damaged file is named as such; a damaged graph dump that still carries a right
        // checksum (rewritten by hand) is an error when searched, not an hnsw_rs panic.
        let bytes = std::fs::read(&path).unwrap();
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x55;
        std::fs::write(dir.join("flipped.bnidx"), &flipped).unwrap();
        let err = Catalogue::open(&dir.join("flipped.bnidx"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        for garbage in [vec![0xffu8; 64], Vec::new()] {
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
            let mut metadata = header.metadata().clone().unwrap();
            metadata.remove(crate::model::file::CHECKSUM_KEY);
            let tensors: Vec<(String, TensorView<'_>)> = st
                .tensors()
                .into_iter()
                .map(|(name, view)| {
                    if name == "hnsw_data" {
                        let t = TensorView::new(Dtype::U8, vec![garbage.len()], &garbage);
                        (name, t.unwrap())
                    } else {
                        (name, view)
                    }
                })
                .collect();
            let resealed = crate::model::file::seal(
                &safetensors::serialize(tensors, Some(metadata)).unwrap(),
                META_KEY,
            )
            .unwrap();
            let damaged = dir.join("damaged.bnidx");
            std::fs::write(&damaged, resealed).unwrap();
            let err = Catalogue::open(&damaged)
                .and_then(|c| c.search(&codes, 5, false))
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("graph is damaged"), "{err}");
        }

        let img = dir.join("x.png");
        image::GrayImage::new(8, 8).save(&img).unwrap();
        let err = cat
            .encode_queries(&img, false, &device, &Silent)
            .unwrap_err()
            .to_string();
        assert!(err.contains("table rows"), "{err}");
        let err = Catalogue::open(&model).err().unwrap().to_string();
        assert!(err.contains("not a bottleneck catalogue"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
