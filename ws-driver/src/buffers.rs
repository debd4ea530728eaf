//! Per-connection byte buffers that follow the traffic, so that an idle connection
//! holds little: the read buffer starts at [`READ_MIN`], doubles after a read that
//! filled it (up to [`READ_MAX`]) and halves after a read that used less than an
//! eighth of it; a write buffer larger than [`WRITE_KEEP`] (a burst) is given back
//! once written. Used by the plain [`WebSocket`](crate::WebSocket) and by
//! [`StreamTransport`](crate::transport::StreamTransport) (every server connection).

/// The read buffer of a connection that has not been busy: what an idle one keeps.
pub(crate) const READ_MIN: usize = 2 * 1024;
/// The read buffer of a busy connection: up to 64 KiB per system call.
pub(crate) const READ_MAX: usize = 64 * 1024;
/// What a write buffer keeps between flushes; a larger one is given back.
pub(crate) const WRITE_KEEP: usize = 16 * 1024;

/// A new read buffer, [`READ_MIN`] bytes.
pub(crate) fn read_buffer() -> Vec<u8> {
    vec![0; READ_MIN]
}

/// Fits `buf` (all of it is read into) to a read of `n` bytes: doubled when the read
/// filled it, halved when it used less than an eighth of it, within
/// [`READ_MIN`]..=[`READ_MAX`].
pub(crate) fn fit_read_buffer(buf: &mut Vec<u8>, n: usize) {
    let len = buf.len();
    if n == len && len < READ_MAX {
        buf.resize(len * 2, 0);
    } else if n < len / 8 && len > READ_MIN {
        buf.truncate(len / 2);
        buf.shrink_to_fit();
    }
}

/// Gives back a write buffer that a burst grew past [`WRITE_KEEP`]; call it once its
/// bytes are written (it is empty or about to be cleared).
pub(crate) fn release_write_buffer(out: &mut Vec<u8>) {
    if out.capacity() > WRITE_KEEP {
        *out = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_buffer_doubles_after_full_reads_up_to_the_maximum() {
        let mut buf = read_buffer();
        assert_eq!(buf.len(), READ_MIN);
        let mut sizes = vec![buf.len()];
        for _ in 0..10 {
            let n = buf.len();
            fit_read_buffer(&mut buf, n);
            sizes.push(buf.len());
        }
        assert_eq!(
            sizes,
            [2, 4, 8, 16, 32, 64, 64, 64, 64, 64, 64].map(|k| k * 1024),
            "doubling from 2 KiB, capped at 64 KiB"
        );
    }

    #[test]
    fn the_read_buffer_halves_after_small_reads_down_to_the_minimum_and_gives_memory_back() {
        let mut buf = read_buffer();
        while buf.len() < READ_MAX {
            let n = buf.len();
            fit_read_buffer(&mut buf, n);
        }
        let mut sizes = vec![];
        for _ in 0..7 {
            fit_read_buffer(&mut buf, 100);
            sizes.push(buf.len());
            assert!(
                buf.capacity() < 2 * buf.len(),
                "capacity given back: {}",
                buf.capacity()
            );
        }
        assert_eq!(sizes, [32, 16, 8, 4, 2, 2, 2].map(|k| k * 1024));
    }

    #[test]
    fn a_read_using_between_an_eighth_and_all_of_the_buffer_keeps_its_size() {
        let mut buf = vec![0; 8 * 1024];
        for n in [1024, 1025, 4096, 8191] {
            fit_read_buffer(&mut buf, n);
            assert_eq!(buf.len(), 8 * 1024, "after a read of {n}");
        }
        fit_read_buffer(&mut buf, 1023);
        assert_eq!(buf.len(), 4 * 1024, "less than an eighth");
    }

    #[test]
    fn a_write_buffer_is_kept_up_to_the_limit_and_given_back_past_it() {
        let mut out = Vec::with_capacity(WRITE_KEEP);
        release_write_buffer(&mut out);
        assert_eq!(out.capacity(), WRITE_KEEP);
        out.reserve(WRITE_KEEP + 1);
        release_write_buffer(&mut out);
        assert_eq!(out.capacity(), 0);
    }
}
