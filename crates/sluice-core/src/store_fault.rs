//! What went wrong with an object store, read from the error's types: object_store's
//! variants for refused credentials, its HTTP error kinds for an endpoint that does not
//! answer, and the error code of the S3 response for what object_store leaves untyped
//! (a missing bucket, a bucket in another region). Below everything else in the crate:
//! errors, storage and sources all name a store's failures with it.

use std::error::Error;

/// A store failure a user can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFault {
    NoSuchBucket,
    OtherRegion,
    AccessDenied,
    Unreachable,
}

impl StoreFault {
    /// The failure of `location` (an s3:// URL) said plainly, naming the bucket and key and
    /// never credentials.
    pub fn describe(self, bucket: &str, location: &str) -> String {
        match self {
            StoreFault::NoSuchBucket => format!("bucket `{bucket}` does not exist ({location})"),
            StoreFault::OtherRegion => format!(
                "bucket `{bucket}` is in another region: set region in [storage.s3] or AWS_REGION ({location})"
            ),
            StoreFault::AccessDenied => format!(
                "access denied to {location}: check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and the bucket's policy"
            ),
            StoreFault::Unreachable => format!(
                "cannot reach the S3 endpoint for bucket `{bucket}` ({location}): check endpoint in [storage.s3] or AWS_ENDPOINT_URL"
            ),
        }
    }
}

/// The bucket of an `s3://bucket/key` location.
pub fn bucket_of(location: &str) -> Option<&str> {
    let rest = location
        .strip_prefix("s3://")
        .or_else(|| location.strip_prefix("s3a://"))?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// The fault behind `error`, from the first error in its chain of sources that says one.
pub fn fault_of(error: &(dyn Error + 'static)) -> Option<StoreFault> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(fault) = fault_of_one(e) {
            return Some(fault);
        }
        next = e.source();
    }
    None
}

fn fault_of_one(e: &(dyn Error + 'static)) -> Option<StoreFault> {
    if let Some(store) = e.downcast_ref::<object_store::Error>() {
        return match store {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => Some(StoreFault::AccessDenied),
            _ => None,
        };
    }
    if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
        use object_store::client::HttpErrorKind;
        return match http.kind() {
            HttpErrorKind::Connect | HttpErrorKind::Timeout | HttpErrorKind::Request => {
                Some(StoreFault::Unreachable)
            }
            _ => None,
        };
    }
    if e.downcast_ref::<std::io::Error>().is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
        )
    }) {
        return Some(StoreFault::Unreachable);
    }
    // object_store keeps a response's status and body in a type of its own that it does
    // not export; the S3 error document (`<Code>NoSuchBucket</Code>`) reaches us in the
    // error's text, and its code is S3's machine-readable name of the failure.
    match s3_error_code(&e.to_string())? {
        "NoSuchBucket" => Some(StoreFault::NoSuchBucket),
        "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IncorrectEndpoint" => {
            Some(StoreFault::OtherRegion)
        }
        "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" => {
            Some(StoreFault::AccessDenied)
        }
        _ => None,
    }
}

/// The `<Code>` of an S3 error document.
fn s3_error_code(text: &str) -> Option<&str> {
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    Some(&text[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Response(&'static str);
    impl std::fmt::Display for Response {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for Response {}

    #[test]
    fn faults_come_from_the_error_types_and_the_s3_code() {
        let denied = object_store::Error::PermissionDenied {
            path: "k".into(),
            source: Box::new(Response("403")),
        };
        assert_eq!(fault_of(&denied), Some(StoreFault::AccessDenied));
        let missing = object_store::Error::Generic {
            store: "S3",
            source: Box::new(Response(
                "Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><BucketName>nope</BucketName></Error>",
            )),
        };
        assert_eq!(fault_of(&missing), Some(StoreFault::NoSuchBucket));
        // Wrapped as DataFusion wraps a store's error: the chain of sources is followed.
        let wrapped = datafusion::error::DataFusionError::ObjectStore(Box::new(missing));
        assert_eq!(fault_of(&wrapped), Some(StoreFault::NoSuchBucket));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(fault_of(&refused), Some(StoreFault::Unreachable));
        // A missing key is no fault of the store's: the caller says "does not exist".
        let no_key = object_store::Error::NotFound {
            path: "k".into(),
            source: Box::new(Response("<Code>NoSuchKey</Code>")),
        };
        assert_eq!(fault_of(&no_key), None);
        assert_eq!(
            StoreFault::NoSuchBucket.describe("nope", "s3://nope/x.csv"),
            "bucket `nope` does not exist (s3://nope/x.csv)"
        );
    }
}
