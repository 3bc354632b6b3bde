//! One shard: its files written while documents stream in (tokens, offsets, documents table, text
//! index), the suffix sort, the manifest, and the rename that publishes it.

use super::*;

/// A writer that hashes and counts what passes through it.
pub(super) struct HashingWriter<W> {
    pub(super) inner: W,
    pub(super) hasher: xxhash_rust::xxh3::Xxh3,
    pub(super) bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(super) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            bytes: 0,
        }
    }
    pub(super) fn entry(&self) -> FileEntry {
        FileEntry {
            bytes: self.bytes,
            checksum: format!("xxh3:{:016x}", self.hasher.digest()),
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub(super) type FileWriter = HashingWriter<std::io::BufWriter<std::fs::File>>;

pub(super) fn create(path: &Path) -> Result<FileWriter> {
    let f = std::fs::File::create(path).at(path)?;
    Ok(HashingWriter::new(std::io::BufWriter::with_capacity(
        1 << 20,
        f,
    )))
}

pub(super) fn close(w: FileWriter, path: &Path) -> Result<FileEntry> {
    let entry = w.entry();
    let f = w
        .inner
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    f.sync_all().at(path)?;
    Ok(entry)
}

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// The shard being filled.
pub(super) struct ShardBuilder<T> {
    pub(super) shard: u32,
    pub(super) first_doc: u64,
    pub(super) tmp: PathBuf,
    pub(super) tokens: Vec<T>,
    pub(super) offsets: Vec<u64>,
    pub(super) documents: DocumentsWriter<FileWriter>,
    pub(super) text: Option<familiar_text::writer::TextWriter>,
    pub(super) input_start: InputCursor,
    pub(super) input_end: InputCursor,
    /// Fingerprint of the records of `input_end.file` consumed up to `input_end`.
    pub(super) input_end_xxh3: u64,
}

impl<T: SaInput> ShardBuilder<T> {
    pub(super) fn start(
        out: &Path,
        shard: u32,
        first_doc: u64,
        input_start: InputCursor,
        text_index: bool,
    ) -> Result<Self> {
        let tmp = out.join(format!(".tmp-{}", shard_dir_name(shard)));
        std::fs::create_dir(&tmp).at(&tmp)?;
        let documents = DocumentsWriter::new(create(&tmp.join(manifest::DOCUMENTS_FILE))?, shard)?;
        let text = if text_index {
            Some(familiar_text::writer::TextWriter::start(&tmp)?)
        } else {
            None
        };
        Ok(ShardBuilder {
            shard,
            first_doc,
            tmp,
            tokens: Vec::new(),
            offsets: Vec::new(),
            documents,
            text,
            input_start,
            input_end: input_start,
            input_end_xxh3: 0,
        })
    }

    pub(super) fn docs(&self) -> u64 {
        self.offsets.len() as u64
    }

    pub(super) fn push(
        &mut self,
        doc: &Document,
        ids: &[u32],
        consumed_xxh3: u64,
        separator: T,
        input_file: &str,
    ) -> Result<()> {
        self.offsets.push(self.tokens.len() as u64);
        let capacity = self.tokens.capacity();
        self.tokens.reserve(ids.len() + 1);
        if self.tokens.capacity() != capacity {
            // The token buffer is what libsais will read at random: back it with huge pages.
            let spare = self.tokens.spare_capacity_mut();
            crate::sa::advise_huge_pages(spare);
        }
        for &id in ids {
            self.tokens.push(T::from_u32(id).ok_or_else(|| {
                Error::Bug(format!("token id {id} does not fit the index width"))
            })?);
        }
        self.tokens.push(separator);
        let doc_id = self.first_doc + self.docs() - 1;
        if let Some(text) = self.text.as_mut() {
            text.add(doc_id, &doc.text)?;
        }
        self.documents.push(&DocumentRow {
            doc_id,
            external_id: &doc.external_id,
            source: doc.source.as_deref(),
            input_file,
            input_record: doc.record,
            token_count: ids.len() as u64,
            byte_length: doc.text.len() as u64,
            metadata: &doc.metadata,
        })?;
        self.input_end = InputCursor {
            file: doc.file,
            record: doc.record,
        };
        self.input_end_xxh3 = consumed_xxh3;
        Ok(())
    }

    /// Sorts, writes, syncs and publishes the shard; returns its manifest.
    pub(super) fn finish(
        mut self,
        out: &Path,
        tokenizer: &Tokenizer,
        fingerprints: Option<&Fingerprints>,
        threads: usize,
        report: &mut BuildReport,
        progress: &Progress,
    ) -> Result<ShardManifest> {
        let n = self.tokens.len() as u64;
        // Every input before the one the shard ends in was read to its end before the shard's
        // last document was read, so its whole-file fingerprint is known.
        let input_fingerprints = match fingerprints {
            None => None,
            Some(fp) => {
                let mut finished = Vec::new();
                for file in self.input_start.file..self.input_end.file {
                    let h = fp.get(file).ok_or_else(|| {
                        Error::Bug(format!(
                            "input {file} was finished before shard {} ended but has no fingerprint",
                            self.shard
                        ))
                    })?;
                    finished.push(FinishedInput {
                        file,
                        xxh3: manifest::fingerprint(h),
                    });
                }
                Some(InputFingerprints {
                    finished,
                    end: manifest::fingerprint(self.input_end_xxh3),
                })
            }
        };
        let mut files = std::collections::BTreeMap::new();
        let t0 = Instant::now();
        let tokens_path = self.tmp.join(manifest::TOKENS_FILE);
        let mut w = create(&tokens_path)?;
        let header = Header::new(
            FileKind::Tokens,
            T::WIDTH * 8,
            n,
            u64::from(tokenizer.vocab_size()),
            u64::from(tokenizer.vocab_size()),
        );
        w.write_all(&header.to_bytes()).at(&tokens_path)?;
        w.write_all(bytemuck::cast_slice(&self.tokens))
            .at(&tokens_path)?;
        files.insert(manifest::TOKENS_FILE.to_string(), close(w, &tokens_path)?);

        let offsets_path = self.tmp.join(manifest::DOC_OFFSETS_FILE);
        let mut w = create(&offsets_path)?;
        let width = format::bits_for(n);
        let count = self.offsets.len() as u64 + 1;
        w.write_all(&Header::new(FileKind::DocOffsets, width, count, n, self.first_doc).to_bytes())
            .at(&offsets_path)?;
        format::write_packed(&mut w, width, self.offsets.iter().copied().chain([n]))
            .at(&offsets_path)?;
        files.insert(
            manifest::DOC_OFFSETS_FILE.to_string(),
            close(w, &offsets_path)?,
        );

        let docs_path = self.tmp.join(manifest::DOCUMENTS_FILE);
        let w = self.documents.finish()?;
        files.insert(manifest::DOCUMENTS_FILE.to_string(), close(w, &docs_path)?);
        report.write_time += t0.elapsed();

        // The text index's commit and merge run beside the suffix sort.
        let text = self.text.take();
        let tmp = self.tmp.clone();
        progress(BuildEvent::Sorting {
            shard: self.shard,
            tokens: n,
            text_index: text.is_some(),
        });
        let tokens = &mut self.tokens;
        let (sa, text_result) = std::thread::scope(|scope| {
            let merging = text.map(|text| {
                scope.spawn(move || {
                    let t = Instant::now();
                    text.finish(&tmp).map(|r| (r, t.elapsed()))
                })
            });
            let t1 = Instant::now();
            let sa = T::suffix_array(tokens, tokenizer.vocab_size() + 1, threads);
            report.suffix_array_time += t1.elapsed();
            let text_result = merging.map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Bug("the text index merge panicked".into())))
            });
            (sa, text_result)
        });
        let sa = sa?;
        let text_index = match text_result {
            Some(r) => {
                let ((text_files, info), took) = r?;
                files.extend(text_files);
                report.text_index_time += took;
                Some(info)
            }
            None => None,
        };
        drop(std::mem::take(&mut self.tokens));

        let t2 = Instant::now();
        let sa_path = self.tmp.join(manifest::SUFFIX_ARRAY_FILE);
        let mut w = create(&sa_path)?;
        let sa_width = format::bits_for(n.saturating_sub(1));
        w.write_all(&Header::new(FileKind::SuffixArray, sa_width, n, n, 0).to_bytes())
            .at(&sa_path)?;
        format::write_packed(&mut w, sa_width, sa.iter().map(|&p| p as u64)).at(&sa_path)?;
        files.insert(manifest::SUFFIX_ARRAY_FILE.to_string(), close(w, &sa_path)?);
        drop(sa);

        let m = ShardManifest {
            format: ShardManifest::FORMAT.into(),
            format_version: format::FORMAT_VERSION,
            shard: self.shard,
            tokenizer_hash: tokenizer.hash().into(),
            token_width: tokenizer.token_width(),
            separator: tokenizer.vocab_size(),
            tokens: n,
            documents: self.offsets.len() as u64,
            first_doc: self.first_doc,
            suffix_array_bits: sa_width,
            input_start: self.input_start,
            input_end: self.input_end,
            input_fingerprints,
            files,
            text_index,
        };
        let mpath = self.tmp.join(manifest::MANIFEST_FILE);
        manifest::write_atomic(&mpath, &manifest::to_bytes(&m)?)?;
        sync_dir(&self.tmp)?;
        let fin = out.join(shard_dir_name(self.shard));
        std::fs::rename(&self.tmp, &fin).at(&fin)?;
        sync_dir(out)?;
        report.write_time += t2.elapsed();
        report.shards_built += 1;
        Ok(m)
    }
}

/// Receives tokenized documents in order and cuts, builds and publishes shards.
pub(super) struct ShardSink<'a, T> {
    pub(super) out: &'a Path,
    pub(super) shard_tokens: u64,
    pub(super) text_index: bool,
    pub(super) tokenizer: &'a Tokenizer,
    pub(super) threads: usize,
    pub(super) separator: T,
    pub(super) current: Option<ShardBuilder<T>>,
    pub(super) next_shard: u32,
    pub(super) next_doc: u64,
    pub(super) next_start: InputCursor,
    /// Every shard of the index so far: those kept from an earlier run, then those published now.
    pub(super) published: Vec<ShardManifest>,
    /// Time spent sorting and writing (to subtract from tokenization time).
    pub(super) busy: Duration,
    /// Whole-file fingerprints of the inputs (none for generated token streams).
    pub(super) fingerprints: Option<Fingerprints>,
    /// Stop once this many shards are published by this run (see `BuildOptions`).
    pub(super) stop_after: Option<usize>,
    /// Stopped: documents pushed from now on are dropped, and nothing more is published.
    pub(super) stopped: bool,
}

impl<'a, T: SaInput> ShardSink<'a, T> {
    pub(super) fn new(
        out: &'a Path,
        plan: &BuildPlan,
        tokenizer: &'a Tokenizer,
        threads: usize,
        done: Vec<ShardManifest>,
    ) -> Result<Self> {
        let (next_shard, next_doc, next_start) = match done.last() {
            Some(m) => (m.shard + 1, m.first_doc + m.documents, m.input_end),
            None => (0, 0, InputCursor::default()),
        };
        let separator = T::from_u32(tokenizer.vocab_size())
            .ok_or_else(|| Error::Bug("separator does not fit".into()))?;
        Ok(ShardSink {
            out,
            shard_tokens: plan.shard_tokens,
            text_index: plan.text_index,
            tokenizer,
            threads,
            separator,
            current: None,
            next_shard,
            next_doc,
            next_start,
            published: done,
            busy: Duration::ZERO,
            fingerprints: None,
            stop_after: None,
            stopped: false,
        })
    }

    /// Adds a document; `consumed_xxh3` is the fingerprint of its input's records up to and
    /// including it; `input_file` and the document's record name it in errors.
    pub(super) fn push(
        &mut self,
        doc: &Document,
        ids: &[u32],
        consumed_xxh3: u64,
        input_file: &str,
        report: &mut BuildReport,
        progress: &Progress,
    ) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        let need = ids.len() as u64 + 1;
        if need > MAX_SHARD_TOKENS {
            return Err(Error::input(
                input_file,
                doc.record,
                format!(
                    "document has {} tokens; a shard holds at most {MAX_SHARD_TOKENS}",
                    ids.len()
                ),
            ));
        }
        if let Some(b) = &self.current {
            if b.tokens.len() as u64 + need > self.shard_tokens {
                self.cut(report, progress)?;
                if self.stop_after.is_some_and(|k| report.shards_built >= k) {
                    self.stopped = true;
                    return Ok(());
                }
            }
        }
        if need > self.shard_tokens {
            // Alone in its shard (the one before was just cut, and the next document starts
            // another), but that shard passes the size, which is a memory budget: say so.
            self.oversized(doc, ids.len() as u64, input_file, report, progress);
        }
        if self.current.is_none() {
            self.current = Some(ShardBuilder::start(
                self.out,
                self.next_shard,
                self.next_doc,
                self.next_start,
                self.text_index,
            )?);
        }
        let b = self
            .current
            .as_mut()
            .ok_or_else(|| Error::Bug("no shard".into()))?;
        b.push(doc, ids, consumed_xxh3, self.separator, input_file)?;
        report.tokens_tokenized += ids.len() as u64;
        Ok(())
    }

    /// Records (and, for the first few, reports as [`BuildEvent::Oversized`]) a document longer
    /// than the shard size.
    pub(super) fn oversized(
        &self,
        doc: &Document,
        tokens: u64,
        input_file: &str,
        report: &mut BuildReport,
        progress: &Progress,
    ) {
        let d = OversizedDocument {
            doc_id: self.next_doc + self.current.as_ref().map_or(0, |b| b.docs()),
            external_id: doc.external_id.clone(),
            input_file: input_file.to_string(),
            record: doc.record,
            tokens,
            shard: self.next_shard,
        };
        report.oversized_documents += 1;
        if report
            .largest_oversized
            .as_ref()
            .is_none_or(|l| l.tokens < d.tokens)
        {
            report.largest_oversized = Some(d.clone());
        }
        if report.oversized_examples.len() < OVERSIZED_EXAMPLES {
            progress(BuildEvent::Oversized {
                document: &d,
                shard_tokens: self.shard_tokens,
                bytes: (tokens + 1) * (T::WIDTH as u64 + 4),
                last: report.oversized_examples.len() + 1 == OVERSIZED_EXAMPLES,
            });
            report.oversized_examples.push(d);
        }
    }

    /// Publishes the current shard, if any.
    pub(super) fn cut(&mut self, report: &mut BuildReport, progress: &Progress) -> Result<()> {
        if let Some(b) = self.current.take() {
            let t = Instant::now();
            let m = b.finish(
                self.out,
                self.tokenizer,
                self.fingerprints.as_ref(),
                self.threads,
                report,
                progress,
            )?;
            self.busy += t.elapsed();
            self.next_shard = m.shard + 1;
            self.next_doc = m.first_doc + m.documents;
            self.next_start = m.input_end;
            self.published.push(m);
        }
        Ok(())
    }
}
