//! `sha256_hex` and `hmac_sha256`: lowercase hex digests of strings or binary values.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanBufferBuilder, StringArray};
use datafusion::arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::args::{all_scalar, arg_array, finish, scalar_str};
use super::sha256_lanes::{padded_block, sha256_block_lanes, LANES};
use super::FunctionDoc;
use super::Secrets;

pub const SHA256_HEX_DOC: FunctionDoc = FunctionDoc {
    name: "sha256_hex",
    kind: "scalar",
    signature: "sha256_hex(value VARCHAR | BYTEA) -> VARCHAR",
    description:
        "Lowercase hex SHA-256 of a string's UTF-8 bytes or of a binary value. NULL in, NULL out.",
    example: "SELECT sha256_hex('abc')",
};

pub const HMAC_SHA256_DOC: FunctionDoc = FunctionDoc {
    name: "hmac_sha256",
    kind: "scalar",
    signature: "hmac_sha256(value VARCHAR | BYTEA, secret_name VARCHAR) -> VARCHAR",
    description: "Lowercase hex HMAC-SHA256 (RFC 2104) keyed with a secret from [secrets]; the key never appears in SQL, plans or errors.",
    example: "SELECT hmac_sha256('abc', 'pii_key')",
};

/// `HEX_PAIRS[b]` is the two lowercase hex digits of byte `b`.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [HEX[i >> 4], HEX[i & 0x0f]];
        i += 1;
    }
    table
};

/// The 64 lowercase hex digits of a digest: sixteen bytes at a time with SSSE3's byte
/// shuffle as the digit table where the CPU has it, else a table lookup per byte.
#[inline]
fn hex64(digest: &[u8; 32]) -> [u8; 64] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        // SAFETY: the CPU has SSSE3.
        return unsafe { hex64_ssse3(digest) };
    }
    hex64_by_table(digest)
}

#[inline]
fn hex64_by_table(digest: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (i, b) in digest.iter().enumerate() {
        let [high, low] = HEX_PAIRS[*b as usize];
        out[2 * i] = high;
        out[2 * i + 1] = low;
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn hex64_ssse3(digest: &[u8; 32]) -> [u8; 64] {
    use std::arch::x86_64::*;
    let digits = _mm_loadu_si128(b"0123456789abcdef".as_ptr() as *const __m128i);
    let low_nibble = _mm_set1_epi8(0x0f);
    let mut out = [0u8; 64];
    for half in 0..2 {
        let bytes = _mm_loadu_si128(digest.as_ptr().add(16 * half) as *const __m128i);
        let high = _mm_shuffle_epi8(digits, _mm_and_si128(_mm_srli_epi16(bytes, 4), low_nibble));
        let low = _mm_shuffle_epi8(digits, _mm_and_si128(bytes, low_nibble));
        let o = out.as_mut_ptr().add(32 * half) as *mut __m128i;
        _mm_storeu_si128(o, _mm_unpacklo_epi8(high, low));
        _mm_storeu_si128(o.add(1), _mm_unpackhi_epi8(high, low));
    }
    out
}

/// The hex digest of every row of a string or binary array, as one string column.
///
/// Every value is 64 bytes, so the offsets are `64 * row` and the null rows are the
/// input's; a null row's slot holds zeros that no reader sees. That leaves one digest and
/// one 64-byte copy per row (`cargo bench --bench functions`: 76% of the bare `sha2` speed
/// on 8192-row batches of short strings, where a per-row builder managed under half).
pub fn hex_digest_column(
    input: &ArrayRef,
    digest: impl FnMut(&[u8]) -> [u8; 32],
) -> Result<StringArray> {
    digest_column(input, RowDigest::Each(digest))
}

/// The hex SHA-256 of every row: values that fit in one block are hashed several at a
/// time (`sha256_lanes`), longer ones one by one.
pub fn sha256_hex_column(input: &ArrayRef) -> Result<StringArray> {
    digest_column(input, RowDigest::<fn(&[u8]) -> [u8; 32]>::Sha256InLanes)
}

/// How each row is digested.
enum RowDigest<D> {
    /// By the caller's function, one row at a time.
    Each(D),
    /// SHA-256, one-block values gathered into lanes (`DigestColumn::push_sha256`).
    Sha256InLanes,
}

fn digest_column<D: FnMut(&[u8]) -> [u8; 32]>(
    input: &ArrayRef,
    digest: RowDigest<D>,
) -> Result<StringArray> {
    let rows = input.len();
    digest_column_bytes(rows)?;
    let nulls = input.logical_nulls();
    let mut out = DigestRows {
        rows,
        nulls: nulls.as_ref(),
        column: DigestColumn::with_capacity(rows),
        digest,
    };
    match input.data_type() {
        DataType::Utf8 => {
            let a = input.as_string::<i32>();
            out.fill(|row| a.value(row).as_bytes())
        }
        DataType::LargeUtf8 => {
            let a = input.as_string::<i64>();
            out.fill(|row| a.value(row).as_bytes())
        }
        DataType::Utf8View => {
            let a = input.as_string_view();
            out.fill(|row| a.value(row).as_bytes())
        }
        DataType::Binary => {
            let a = input.as_binary::<i32>();
            out.fill(|row| a.value(row))
        }
        DataType::LargeBinary => {
            let a = input.as_binary::<i64>();
            out.fill(|row| a.value(row))
        }
        DataType::BinaryView => {
            let a = input.as_binary_view();
            out.fill(|row| a.value(row))
        }
        DataType::Null => out.fill(|_| &[]),
        other => return exec_err!("expected a string or binary argument, got {other}"),
    }
    out.column.finish()
}

/// The bytes of a column of `rows` hex digests, when its i32 offsets can address them.
fn digest_column_bytes(rows: usize) -> Result<usize> {
    match rows.checked_mul(64).filter(|b| *b <= i32::MAX as usize) {
        Some(bytes) => Ok(bytes),
        None => exec_err!("{rows} digests do not fit in one string column; use smaller batches"),
    }
}

/// 64-byte values, one per row, as a string column: the offsets are `64 * row`.
fn digest_array(values: Vec<u8>, nulls: Option<NullBuffer>) -> Result<StringArray> {
    let rows = values.len() / 64;
    digest_column_bytes(rows)?;
    let offsets = ScalarBuffer::from_iter((0..=rows).map(|row| (row * 64) as i32));
    Ok(StringArray::try_new(
        OffsetBuffer::new(offsets),
        Buffer::from_vec(values),
        nulls,
    )?)
}

struct DigestRows<'a, D> {
    rows: usize,
    nulls: Option<&'a NullBuffer>,
    column: DigestColumn,
    digest: RowDigest<D>,
}

impl<D: FnMut(&[u8]) -> [u8; 32]> DigestRows<'_, D> {
    /// Generic over the accessor so each input type gets its own inlined loop.
    fn fill<'v>(&mut self, value: impl Fn(usize) -> &'v [u8]) {
        for row in 0..self.rows {
            if self.nulls.is_some_and(|n| n.is_null(row)) {
                self.column.push_null();
                continue;
            }
            match &mut self.digest {
                RowDigest::Each(digest) => self.column.push_digest(&digest(value(row))),
                RowDigest::Sha256InLanes => self.column.push_sha256(value(row)),
            }
        }
    }
}

/// A column of hex digests built row by row, in the layout `hex_digest_column` writes:
/// 64 bytes per row, a null row's slot holding zeros no reader sees.
pub struct DigestColumn {
    values: Vec<u8>,
    nulls: BooleanBufferBuilder,
    /// SHA-256 inputs of one block waiting to be hashed together (`sha256_lanes`): the
    /// offset of their row's slot and the padded block.
    waiting: Vec<(usize, [u8; 64])>,
}

impl DigestColumn {
    pub fn with_capacity(rows: usize) -> Self {
        DigestColumn {
            values: Vec::with_capacity(rows * 64),
            nulls: BooleanBufferBuilder::new(rows),
            waiting: Vec::with_capacity(LANES),
        }
    }

    pub fn push_digest(&mut self, digest: &[u8; 32]) {
        self.push_hex(&hex64(digest));
    }

    /// The SHA-256 of `bytes`; a one-block value waits for others to be hashed with.
    pub fn push_sha256(&mut self, bytes: &[u8]) {
        let Some(block) = padded_block(bytes) else {
            return self.push_digest(&sha256(bytes));
        };
        self.waiting.push((self.values.len(), block));
        self.push_hex(&[0u8; 64]);
        if self.waiting.len() == LANES {
            self.hash_waiting();
        }
    }

    fn hash_waiting(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let blocks = std::array::from_fn(|lane| match self.waiting.get(lane) {
            Some((_, block)) => *block,
            None => self.waiting[0].1,
        });
        let digests = sha256_block_lanes(&blocks);
        for ((slot, _), digest) in self.waiting.drain(..).zip(digests.iter()) {
            self.values[slot..slot + 64].copy_from_slice(&hex64(digest));
        }
    }

    /// A value that is already 64 lowercase hex digits.
    pub fn push_hex(&mut self, hex: &[u8; 64]) {
        self.values.extend_from_slice(hex);
        self.nulls.append(true);
    }

    pub fn push_null(&mut self) {
        self.values.extend_from_slice(&[0u8; 64]);
        self.nulls.append(false);
    }

    pub fn finish(mut self) -> Result<StringArray> {
        self.hash_waiting();
        let nulls = NullBuffer::new(self.nulls.finish());
        digest_array(self.values, (nulls.null_count() > 0).then_some(nulls))
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn binary_or_string_signature() -> Signature {
    Signature::one_of(
        [
            DataType::Utf8,
            DataType::LargeUtf8,
            DataType::Utf8View,
            DataType::Binary,
            DataType::LargeBinary,
            DataType::BinaryView,
        ]
        .into_iter()
        .map(|t| TypeSignature::Exact(vec![t]))
        .collect(),
        Volatility::Immutable,
    )
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Sha256Hex {
    signature: Signature,
}

impl Sha256Hex {
    pub fn new() -> Self {
        Sha256Hex {
            signature: binary_or_string_signature(),
        }
    }
}

impl ScalarUDFImpl for Sha256Hex {
    fn name(&self) -> &str {
        "sha256_hex"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let all_const = all_scalar(&args.args);
        let input = arg_array(&args.args[0], all_const, args.number_rows)?;
        let out = sha256_hex_column(&input)?;
        finish(Arc::new(out), all_const)
    }
}

type HmacSha256Mac = Hmac<Sha256>;

/// HMAC keyed by a named secret. The key is read from the secrets on first use and kept
/// in memory only; it is not part of the function's identity, name or any message.
#[derive(Debug)]
pub struct HmacSha256 {
    signature: Signature,
    secrets: Arc<dyn Secrets>,
    keys: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

impl PartialEq for HmacSha256 {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.secrets, &other.secrets)
    }
}
impl Eq for HmacSha256 {}
impl std::hash::Hash for HmacSha256 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "hmac_sha256".hash(state);
    }
}

impl HmacSha256 {
    pub fn new(secrets: Arc<dyn Secrets>) -> Self {
        let strings = [DataType::Utf8, DataType::LargeUtf8, DataType::Utf8View];
        let values = [
            DataType::Utf8,
            DataType::LargeUtf8,
            DataType::Utf8View,
            DataType::Binary,
            DataType::LargeBinary,
            DataType::BinaryView,
        ];
        let sigs = values
            .iter()
            .flat_map(|v| {
                strings
                    .iter()
                    .map(move |s| TypeSignature::Exact(vec![v.clone(), s.clone()]))
            })
            .collect();
        HmacSha256 {
            signature: Signature::one_of(sigs, Volatility::Immutable),
            secrets,
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, name: &str) -> Result<Arc<Vec<u8>>> {
        if let Some(k) = self.keys.lock().ok().and_then(|k| k.get(name).cloned()) {
            return Ok(k);
        }
        let key = match self.secrets.read(name) {
            Ok(k) => Arc::new(k),
            Err(e) => return exec_err!("hmac_sha256: {e}"),
        };
        if let Ok(mut keys) = self.keys.lock() {
            keys.insert(name.to_string(), key.clone());
        }
        Ok(key)
    }
}

impl ScalarUDFImpl for HmacSha256 {
    fn name(&self) -> &str {
        "hmac_sha256"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        // Check the secret at planning time so a typo fails before any data is read.
        match args
            .scalar_arguments
            .get(1)
            .copied()
            .flatten()
            .and_then(scalar_str)
        {
            Some(name) => {
                if !self.secrets.declares(name) {
                    return plan_err!(
                        "hmac_sha256: unknown secret `{name}`; declare it under [secrets] in sluice.toml"
                    );
                }
            }
            None => {
                return plan_err!(
                "hmac_sha256: the second argument must be a secret name given as a string literal"
            )
            }
        }
        Ok(Arc::new(Field::new(self.name(), DataType::Utf8, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = match &args.args[1] {
            ColumnarValue::Scalar(s) => match scalar_str(s) {
                Some(n) => n.to_string(),
                None => return exec_err!("hmac_sha256: the secret name must not be NULL"),
            },
            ColumnarValue::Array(_) => {
                return exec_err!("hmac_sha256: the secret name must be a constant")
            }
        };
        let key = self.key(&name)?;
        let base = match HmacSha256Mac::new_from_slice(&key) {
            Ok(m) => m,
            Err(_) => return exec_err!("hmac_sha256: secret `{name}` cannot be used as a key"),
        };
        let all_const = all_scalar(&args.args);
        let input = arg_array(&args.args[0], all_const, args.number_rows)?;
        let out = hex_digest_column(&input, |bytes| {
            let mut mac = base.clone();
            mac.update(bytes);
            mac.finalize().into_bytes().into()
        })?;
        finish(Arc::new(out), all_const)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        String::from_utf8(hex64(&sha256(bytes)).to_vec()).unwrap()
    }

    fn hmac_hex(key: &[u8], data: &[u8]) -> String {
        let mut mac = HmacSha256Mac::new_from_slice(key).unwrap();
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn hex_digits_of_every_byte_value() {
        for start in (0..=255u8).step_by(32) {
            let digest: [u8; 32] = std::array::from_fn(|i| start.wrapping_add(i as u8));
            assert_eq!(hex64(&digest).as_slice(), hex::encode(digest).as_bytes());
        }
    }

    #[test]
    fn hex_digits_by_shuffle_and_by_table_agree() {
        for seed in 0..64u8 {
            let digest: [u8; 32] =
                std::array::from_fn(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed ^ 0x5a));
            assert_eq!(&hex64(&digest)[..], hex::encode(digest).as_bytes());
            assert_eq!(hex64(&digest), hex64_by_table(&digest));
        }
    }

    /// Values of every length around the one-block limit (55 bytes), NULLs between them
    /// and an odd count, so lanes fill, run part-empty and leave rows to the one-by-one
    /// path: each row's digest is the `sha2` crate's.
    #[test]
    fn sha256_column_in_lanes_matches_row_by_row() {
        let values: Vec<Option<String>> = (0..131usize)
            .map(|i| (i % 7 != 3).then(|| "x".repeat(i % 70) + &i.to_string()))
            .collect();
        let input: ArrayRef = Arc::new(StringArray::from(values.clone()));
        let column = sha256_hex_column(&input).unwrap();
        assert_eq!(column.len(), values.len());
        for (row, value) in values.iter().enumerate() {
            match value {
                None => assert!(column.is_null(row), "row {row}"),
                Some(v) => assert_eq!(column.value(row), hex(v.as_bytes()), "row {row}"),
            }
        }
        let sliced = input.slice(5, 60);
        let column = sha256_hex_column(&sliced).unwrap();
        for row in 0..60 {
            match &values[5 + row] {
                None => assert!(column.is_null(row)),
                Some(v) => assert_eq!(column.value(row), hex(v.as_bytes())),
            }
        }
    }

    /// FIPS 180-2 Appendix B.1 and B.2 ("abc" and the two-block message); empty string
    /// from NIST's SHA-256 example values.
    #[test]
    fn sha256_fips_vectors() {
        assert_eq!(
            hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    /// RFC 4231 test cases 1, 2 and 6 (HMAC-SHA-256 lines).
    #[test]
    fn hmac_rfc4231_vectors() {
        assert_eq!(
            hmac_hex(&[0x0b; 20], b"Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hmac_hex(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
