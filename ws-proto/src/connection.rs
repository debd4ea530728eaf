//! The RFC 6455 connection state machine, for either role.
//!
//! Drive it like every state machine of tether:
//!
//! 1. hand it what the socket read with [`Connection::handle_bytes`] (any split: a
//!    whole batch of frames or one byte at a time gives the same events);
//! 2. drain [`Connection::poll_event`] until `None`;
//! 3. drain [`Connection::poll_transmit`] until `None` and write those bytes, in order;
//! 4. when [`Connection::is_closed`] and nothing is left to transmit, close the socket
//!    (a client may first wait briefly for the server to close, RFC 6455 §7.1.1).
//!
//! The payload of a frame is never buffered twice: it is unmasked straight into the
//! message being assembled, so memory is bounded by the configured message size.

use std::collections::VecDeque;
use std::fmt;
use std::mem;

use bytes::{Bytes, BytesMut};

use crate::close::{close_body, failure_close_body, parse_close_body, CloseCode, CloseFrame};
use crate::config::Config;
use crate::deflate::{DeflateParams, Deflater, Inflater, Precompressed, TAIL};
use crate::error::{ProtocolError, SendError};
use crate::frame::{apply_mask, encode_frame, FrameHeader, MaskSource, OpCode, MAX_HEADER_LEN};
use crate::message::Message;
use crate::utf8::Utf8Validator;

/// Which end of the connection this is. It decides which way masking goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The server end: expects masked frames, sends unmasked ones.
    Server,
    /// The client end: expects unmasked frames, masks every frame it sends.
    Client,
}

/// Where the closing handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's; incoming messages are still
    /// delivered, nothing more may be sent.
    Closing,
    /// Both close frames have been exchanged, the peer broke the protocol, or the
    /// transport ended. Flush what [`Connection::poll_transmit`] still holds, then
    /// close the socket.
    Closed,
}

/// What a connection tells its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A complete text message, valid UTF-8.
    Text(String),
    /// A complete binary message.
    Binary(Bytes),
    /// A ping arrived. With [`Config::auto_pong`] the pong is already queued.
    Ping(Bytes),
    /// A pong arrived.
    Pong(Bytes),
    /// The peer closed (its close frame, already answered when we had not closed
    /// first), or the transport ended without one: then the code is
    /// [`CloseCode::ABNORMAL`] (1006), as browsers report it. An empty close frame
    /// is reported with no code.
    Close(CloseFrame),
    /// The peer broke the protocol. A close frame with
    /// [`ProtocolError::close_code`] is queued; the connection is closed.
    Failed(ProtocolError),
}

impl Event {
    /// The event as a transport-level [`Message`], the unit the session engine
    /// consumes. `None` for [`Event::Failed`].
    pub fn into_message(self) -> Option<Message> {
        Some(match self {
            Self::Text(text) => Message::Text(text),
            Self::Binary(data) => Message::Binary(data),
            Self::Ping(data) => Message::Ping(data),
            Self::Pong(data) => Message::Pong(data),
            Self::Close(frame) => Message::Close(Some(frame)),
            Self::Failed(_) => return None,
        })
    }
}

/// The events of one read, decoded as they are taken: see [`Connection::events`].
#[derive(Debug)]
pub struct Events<'c, 'd> {
    conn: &'c mut Connection,
    data: &'d [u8],
}

impl Iterator for Events<'_, '_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.conn.poll_event() {
                return Some(event);
            }
            if self.data.is_empty() || !self.conn.accepts_input() {
                return None;
            }
            let consumed = self.conn.step(self.data);
            self.data = &self.data[consumed..];
        }
    }
}

impl Drop for Events<'_, '_> {
    fn drop(&mut self) {
        // Nothing read may be lost: what was not decoded yet is decoded now.
        self.conn.handle_bytes(self.data);
    }
}

/// A frame whose payload is still arriving.
#[derive(Debug, Clone, Copy)]
struct FrameInProgress {
    header: FrameHeader,
    /// Payload bytes still to come.
    remaining: u64,
    /// Payload bytes already received (the position in the mask cycle).
    received: usize,
}

/// A data message whose frames are still arriving.
#[derive(Debug)]
struct MessageInProgress {
    text: bool,
    fragments: usize,
    /// Payload bytes received so far, all fragments together; for a compressed
    /// message, the bytes inflated so far.
    len: u64,
    /// RSV1 on its first frame: permessage-deflate compressed.
    compressed: bool,
    /// Compressed bytes received so far (compressed messages only).
    wire_len: u64,
}

/// Messages up to this size are copied out so the assembly buffer is reused; larger
/// ones are moved out whole to avoid the copy.
const COPY_OUT_MAX: usize = 4 * 1024;
/// Texts from this size on are validated with SIMD (and copied out); smaller ones are
/// validated by the standard library in place, which wins on short inputs.
const SIMD_TEXT_MIN: usize = 512;
/// An assembly buffer grown past this is released after its message, so an idle
/// connection does not keep a large allocation.
const RETAIN_MAX: usize = 64 * 1024;

/// One WebSocket connection after its handshake: RFC 6455 framing and the closing
/// handshake, for the server or the client role. See the [crate docs](crate#the-drive-loop) for
/// the drive loop.
pub struct Connection {
    role: Role,
    config: Config,
    masks: Option<Box<dyn MaskSource>>,
    state: ConnectionState,
    close_sent: bool,
    error: Option<ProtocolError>,

    header_buf: [u8; MAX_HEADER_LEN],
    header_len: usize,
    frame: Option<FrameInProgress>,
    message: Option<MessageInProgress>,
    /// A binary message being assembled, or scratch space to unmask text into.
    message_buf: Vec<u8>,
    /// A text message being assembled, built as it is validated (one pass).
    text_buf: String,
    control_buf: Vec<u8>,
    utf8: Utf8Validator,
    events: VecDeque<Event>,
    /// The close frame body that answers the last event queued ([`Event::Close`] or
    /// [`Event::Failed`]). It is written when the caller polls that event, so that
    /// the answers to the messages before it go out first: nothing accepted is lost.
    pending_close: Option<Vec<u8>>,

    /// Frames written but not yet handed out, in order.
    out: BytesMut,
    /// Whole chunks queued before `out` (pre-framed shared payloads and what `out`
    /// held when they were queued), so that order is kept.
    out_queue: VecDeque<Bytes>,
    /// Automatic pongs queued since the caller last took everything to transmit.
    queued_pongs: usize,
    /// The payload of the latest ping, once [`Config::max_queued_pongs`] pongs wait:
    /// one pong answers it when the transmit queue is taken (RFC 6455 §5.5.3 lets an
    /// endpoint answer only the most recent of several pings). A peer that pings
    /// without reading thus costs a bounded amount of memory, not a pong per ping.
    coalesced_pong: Option<Vec<u8>>,

    /// permessage-deflate, when the handshake agreed it. Boxed: most connections
    /// do without, and inline it would be a sixth of every connection.
    compression: Option<Box<Compression>>,
}

/// A connection's permessage-deflate state.
struct Compression {
    /// The parameters agreed in the handshake.
    params: DeflateParams,
    deflater: Deflater,
    inflater: Inflater,
    /// Compressed output of the message being sent.
    buf: Vec<u8>,
}

/// Compressed input is unmasked in pieces of this size, on the stack.
const UNMASK_PIECE: usize = 4096;

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("error", &self.error)
            .field("pending_events", &self.events.len())
            .field("pending_transmit", &self.pending_transmit_len())
            .field("deflate", &self.deflate())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A server-side connection, after the 101 response was sent.
    ///
    /// Feed it first the bytes that arrived after the request head
    /// ([`handshake::Request`](crate::handshake::Request) hands them back).
    pub fn server(config: Config) -> Self {
        Self::new(Role::Server, config, None)
    }

    /// A client-side connection, after the 101 response was validated. Every frame
    /// it sends is masked with a key from `masks` (RFC 6455 §5.3 wants keys an
    /// intermediary cannot predict: seed it from real entropy).
    pub fn client(config: Config, masks: impl MaskSource + 'static) -> Self {
        Self::new(Role::Client, config, Some(Box::new(masks)))
    }

    fn new(role: Role, config: Config, masks: Option<Box<dyn MaskSource>>) -> Self {
        Self {
            role,
            config,
            masks,
            state: ConnectionState::Open,
            close_sent: false,
            error: None,
            header_buf: [0; MAX_HEADER_LEN],
            header_len: 0,
            frame: None,
            message: None,
            message_buf: Vec::new(),
            text_buf: String::new(),
            pending_close: None,
            control_buf: Vec::with_capacity(125),
            utf8: Utf8Validator::new(),
            events: VecDeque::new(),
            out: BytesMut::new(),
            out_queue: VecDeque::new(),
            queued_pongs: 0,
            coalesced_pong: None,
            compression: None,
        }
    }

    /// Runs permessage-deflate with the parameters agreed in the handshake (`None`:
    /// no compression, the default). Call it before any byte is fed or sent, with what
    /// the 101 response said: on a server what
    /// [`Request::negotiate_deflate`](crate::handshake::Request::negotiate_deflate)
    /// returned and [`Accept::with_deflate`](crate::handshake::Accept::with_deflate)
    /// sent, on a client [`Response::deflate`](crate::handshake::Response::deflate).
    ///
    /// Messages of [`Config::deflate_min_size`] bytes or more are then compressed,
    /// RSV1 is accepted on the first frame of a data message, and the limit
    /// [`Config::max_message_size`] applies to the *inflated* size: a small frame that
    /// inflates past it is failed with 1009 after at most the limit plus 16 KiB of
    /// output, inflated in 16 KiB steps.
    pub fn with_deflate(mut self, params: Option<DeflateParams>) -> Self {
        let server = self.role == Role::Server;
        self.compression = params.map(|params| {
            let (no_context_takeover, window_bits) = params.sending(server);
            Box::new(Compression {
                params,
                deflater: Deflater::new(self.config.deflate_level, window_bits, no_context_takeover),
                inflater: Inflater::new(params.peer_resets(server)),
                buf: Vec::new(),
            })
        });
        self
    }

    /// The permessage-deflate parameters in force, if the extension was agreed.
    pub fn deflate(&self) -> Option<&DeflateParams> {
        self.compression.as_ref().map(|c| &c.params)
    }

    /// The decompressor, when permessage-deflate was agreed.
    fn inflater(&mut self) -> Option<&mut Inflater> {
        self.compression.as_deref_mut().map(|c| &mut c.inflater)
    }

    /// Bytes this connection holds for receiving and compressing: the capacity of its
    /// assembly buffers plus the (approximate) state of its compressor and
    /// decompressor. Not counted: what waits in [`Connection::poll_transmit`]
    /// ([`Connection::pending_transmit_len`]) and events not yet polled.
    pub fn buffered_bytes(&self) -> usize {
        self.message_buf.capacity()
            + self.text_buf.capacity()
            + self.control_buf.capacity()
            + self.compression.as_ref().map_or(0, |c| {
                c.buf.capacity() + c.deflater.state_size() + c.inflater.state_size()
            })
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Where the closing handshake stands.
    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// Whether the connection is closed: no more events will come, every close frame
    /// owed has been queued, and nothing more can be sent. Flush
    /// [`Connection::poll_transmit`], then close the socket.
    pub fn is_closed(&self) -> bool {
        self.state == ConnectionState::Closed && self.pending_close.is_none() && self.events.is_empty()
    }

    /// The protocol error that failed the connection, if one did. Sticky: once set it
    /// never changes.
    pub fn error(&self) -> Option<&ProtocolError> {
        self.error.as_ref()
    }

    /// The limits this connection enforces.
    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----------------------------------------------------------------- receiving

    /// Feeds bytes read from the transport. Call it with every chunk read, then
    /// drain [`Connection::poll_event`] and [`Connection::poll_transmit`].
    ///
    /// Bytes that arrive after the connection closed are discarded: nothing may
    /// follow a close frame.
    pub fn handle_bytes(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.accepts_input() {
            data = &data[self.step(data)..];
        }
    }

    /// Feeds `data` like [`Connection::handle_bytes`], but decodes it as the returned
    /// iterator is advanced: each event is handed out as soon as its frame is read,
    /// instead of every event of a large read being queued first (kinder to caches
    /// when a read holds thousands of small messages). Answer each event before taking
    /// the next, as with [`Connection::poll_event`]. Dropping the iterator early still
    /// consumes all of `data`; the remaining events then wait in
    /// [`Connection::poll_event`].
    pub fn events<'c, 'd>(&'c mut self, data: &'d [u8]) -> Events<'c, 'd> {
        Events { conn: self, data }
    }

    /// Decodes the start of `data` (a header or part of a payload); returns the bytes
    /// consumed.
    fn step(&mut self, data: &[u8]) -> usize {
        match self.frame {
            None => self.read_header(data),
            Some(frame) => self.read_payload(frame, data),
        }
    }

    /// Tells the connection that the transport reached end of stream (or failed).
    /// If the closing handshake had not finished, an [`Event::Close`] with code 1006
    /// reports the abnormal closure.
    pub fn handle_eof(&mut self) {
        if self.state != ConnectionState::Closed {
            self.state = ConnectionState::Closed;
            self.events
                .push_back(Event::Close(CloseFrame::new(CloseCode::ABNORMAL, String::new())));
        }
        self.frame = None;
        self.message = None;
        if let Some(inflater) = self.inflater() {
            inflater.release();
        }
    }

    /// The next event, or `None` when there is nothing more until the next input.
    ///
    /// Answer each event before polling the next: when the peer closes or breaks the
    /// protocol, our close frame is queued as its event is polled, after whatever was
    /// sent in answer to the messages before it.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        if self.events.is_empty() {
            if let Some(body) = self.pending_close.take() {
                self.write_frame(OpCode::Close, &body);
                self.close_sent = true;
            }
        }
        Some(event)
    }

    fn accepts_input(&self) -> bool {
        // After the peer's close (or a failure) nothing more is read. After our own
        // close we keep reading until the peer's close arrives.
        self.state != ConnectionState::Closed
    }

    /// Reads (part of) a frame header. Returns the bytes of `data` consumed.
    fn read_header(&mut self, data: &[u8]) -> usize {
        // Fast path: a whole header at the front of `data`, nothing buffered.
        let (decoded, consumed) = if self.header_len == 0 {
            match FrameHeader::decode(data) {
                Ok(Some((header, len))) => (Ok(Some(header)), len),
                Ok(None) => {
                    self.header_buf[..data.len()].copy_from_slice(data);
                    self.header_len = data.len();
                    return data.len();
                }
                Err(err) => (Err(err), data.len()),
            }
        } else {
            let take = (MAX_HEADER_LEN - self.header_len).min(data.len());
            self.header_buf[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
            let buffered = self.header_len + take;
            match FrameHeader::decode(&self.header_buf[..buffered]) {
                Ok(Some((header, len))) => {
                    let consumed = len - self.header_len;
                    self.header_len = 0;
                    (Ok(Some(header)), consumed)
                }
                Ok(None) => {
                    self.header_len = buffered;
                    return take;
                }
                Err(err) => (Err(err), take),
            }
        };
        match decoded.and_then(|header| self.check_header(header.expect("decoded"))) {
            Ok(frame) => {
                if let Some(payload_len) = self.try_whole_message(frame, &data[consumed..]) {
                    return consumed + payload_len;
                }
                self.frame = Some(frame);
                if frame.remaining == 0 {
                    self.finish_frame(frame);
                }
            }
            Err(err) => self.fail(err),
        }
        consumed
    }

    /// The fast path for the common case: a whole, unfragmented data message whose
    /// payload is already in `rest`. It is unmasked straight into the buffer the
    /// message is handed out in and validated once: one allocation, one copy.
    /// Returns the payload bytes consumed, or `None` to take the general path.
    fn try_whole_message(&mut self, frame: FrameInProgress, rest: &[u8]) -> Option<usize> {
        let header = frame.header;
        let text = match header.opcode {
            OpCode::Text => true,
            OpCode::Binary => false,
            _ => return None,
        };
        if !header.fin || header.rsv != 0 || (rest.len() as u64) < header.payload_len {
            return None;
        }
        // `payload_len` fits `rest`, so it fits a usize.
        let len = header.payload_len as usize;
        self.message = None;
        let event = if text && len >= SIMD_TEXT_MIN {
            // Large text: unmask into the reusable buffer, validate with SIMD, copy the
            // validated text out (a copy costs less than a scalar validation pass).
            self.message_buf.clear();
            unmask_onto(&mut self.message_buf, &rest[..len], header.mask, 0);
            match simdutf8::compat::from_utf8(&self.message_buf) {
                Ok(valid) => Event::Text(valid.to_owned()),
                Err(err) => {
                    self.fail(ProtocolError::InvalidUtf8 {
                        valid_up_to: err.valid_up_to(),
                    });
                    return Some(len);
                }
            }
        } else {
            let mut payload = Vec::with_capacity(len);
            payload.extend_from_slice(&rest[..len]);
            if let Some(mask) = header.mask {
                apply_mask(&mut payload, mask, 0);
            }
            if text {
                match String::from_utf8(payload) {
                    Ok(text) => Event::Text(text),
                    Err(err) => {
                        self.fail(ProtocolError::InvalidUtf8 {
                            valid_up_to: err.utf8_error().valid_up_to(),
                        });
                        return Some(len);
                    }
                }
            } else {
                Event::Binary(Bytes::from(payload))
            }
        };
        self.events.push_back(event);
        Some(len)
    }

    /// The checks that need the connection's state: masking by role, reserved bits,
    /// fragmentation order and the size limits. Starts the message on success.
    fn check_header(&mut self, header: FrameHeader) -> Result<FrameInProgress, ProtocolError> {
        // RSV1 means "compressed" once permessage-deflate is agreed, and only on the
        // first frame of a data message (RFC 7692 §6.1); RSV2 and RSV3 mean nothing.
        let rsv1 = header.rsv & 0b100 != 0;
        let rsv1_allowed =
            self.compression.is_some() && matches!(header.opcode, OpCode::Text | OpCode::Binary);
        if header.rsv & 0b011 != 0 || (rsv1 && !rsv1_allowed) {
            return Err(ProtocolError::ReservedBits { bits: header.rsv });
        }
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedClientFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedServerFrame),
            _ => {}
        }
        let len = header.payload_len;
        if len > self.config.max_frame_size as u64 {
            return Err(ProtocolError::FrameTooLarge {
                len,
                max: self.config.max_frame_size,
            });
        }
        match header.opcode {
            OpCode::Text | OpCode::Binary => {
                if self.message.is_some() {
                    return Err(ProtocolError::ExpectedContinuation {
                        opcode: header.opcode,
                    });
                }
                if rsv1 {
                    self.check_compressed_size(len)?;
                } else {
                    self.check_message_size(len)?;
                }
                // The buffer may still hold unmasking scratch of the last text.
                self.message_buf.clear();
                self.message = Some(MessageInProgress {
                    text: header.opcode == OpCode::Text,
                    fragments: 1,
                    len: 0,
                    compressed: rsv1,
                    wire_len: 0,
                });
            }
            OpCode::Continuation => {
                let max_fragments = self.config.max_fragments;
                let Some(message) = self.message.as_mut() else {
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                message.fragments += 1;
                if message.fragments > max_fragments {
                    return Err(ProtocolError::TooManyFragments { max: max_fragments });
                }
                if message.compressed {
                    let total = message.wire_len + len;
                    self.check_compressed_size(total)?;
                } else {
                    let total = message.len + len;
                    self.check_message_size(total)?;
                }
            }
            // Control frames: the header codec already checked FIN and ≤125 bytes.
            OpCode::Close | OpCode::Ping | OpCode::Pong => self.control_buf.clear(),
        }
        Ok(FrameInProgress {
            header,
            remaining: len,
            received: 0,
        })
    }

    fn check_message_size(&self, len: u64) -> Result<(), ProtocolError> {
        if len > self.config.max_message_size as u64 {
            return Err(ProtocolError::MessageTooLarge {
                len,
                max: self.config.max_message_size,
            });
        }
        Ok(())
    }

    /// The compressed size of a message is bounded too, with room for what DEFLATE adds
    /// to data it cannot compress (5 bytes per stored block of up to 64 KiB); the
    /// inflated size is checked as it is inflated.
    fn check_compressed_size(&self, len: u64) -> Result<(), ProtocolError> {
        let max = self.config.max_message_size as u64;
        if len > max + max / 1024 + 1024 {
            return Err(ProtocolError::MessageTooLarge {
                len,
                max: self.config.max_message_size,
            });
        }
        Ok(())
    }

    /// Unmasks and inflates part of a compressed message's payload.
    fn inflate_payload(
        &mut self,
        chunk: &[u8],
        mask: Option<[u8; 4]>,
        offset: usize,
    ) -> Result<(), ProtocolError> {
        let Some(mask) = mask else {
            return self.inflate(chunk);
        };
        let mut piece = [0u8; UNMASK_PIECE];
        for (i, part) in chunk.chunks(UNMASK_PIECE).enumerate() {
            let piece = &mut piece[..part.len()];
            piece.copy_from_slice(part);
            apply_mask(piece, mask, offset + i * UNMASK_PIECE);
            self.inflate(piece)?;
        }
        Ok(())
    }

    /// Inflates unmasked compressed bytes into the message being assembled, in
    /// bounded steps, checking the inflated size against the limit after each step
    /// and validating text as it comes.
    fn inflate(&mut self, input: &[u8]) -> Result<(), ProtocolError> {
        let inflater = self.compression.as_deref_mut().map(|c| &mut c.inflater);
        let (Some(inflater), Some(message)) = (inflater, self.message.as_mut()) else {
            return Ok(());
        };
        let max = self.config.max_message_size;
        let (text_buf, message_buf, utf8) = (&mut self.text_buf, &mut self.message_buf, &mut self.utf8);
        inflater.inflate(input, |out| {
            message.len += out.len() as u64;
            if message.len > max as u64 {
                // How far past the limit a step went depends on how the input was
                // split; the error says only "past it", the same whatever the split.
                return Err(ProtocolError::MessageTooLarge {
                    len: max as u64 + 1,
                    max,
                });
            }
            if message.text {
                utf8.push(out, text_buf)
                    .map_err(|valid_up_to| ProtocolError::InvalidUtf8 { valid_up_to })
            } else {
                message_buf.extend_from_slice(out);
                Ok(())
            }
        })
    }

    /// Reads (part of) a payload. Returns the bytes of `data` consumed.
    fn read_payload(&mut self, mut frame: FrameInProgress, data: &[u8]) -> usize {
        // `remaining` is bounded by max_frame_size (a usize), so this cannot truncate.
        let take = (frame.remaining.min(data.len() as u64)) as usize;
        let chunk = &data[..take];
        let mask = frame.header.mask;
        let offset = frame.received;
        frame.received += take;
        frame.remaining -= take as u64;
        self.frame = Some(frame);

        if frame.header.opcode.is_control() {
            unmask_onto(&mut self.control_buf, chunk, mask, offset);
        } else if let Some(message) = self.message.as_mut() {
            if message.compressed {
                message.wire_len += take as u64;
                if let Err(err) = self.inflate_payload(chunk, mask, offset) {
                    self.fail(err);
                    return take;
                }
            } else if message.text {
                message.len += take as u64;
                // Validate text as it arrives, so an invalid sequence fails the
                // connection at once, not after the rest of a large message; the
                // text is built in the same pass.
                let plain = match mask {
                    Some(_) => {
                        self.message_buf.clear();
                        unmask_onto(&mut self.message_buf, chunk, mask, offset);
                        &self.message_buf[..]
                    }
                    None => chunk,
                };
                if let Err(valid_up_to) = self.utf8.push(plain, &mut self.text_buf) {
                    self.fail(ProtocolError::InvalidUtf8 { valid_up_to });
                    return take;
                }
            } else {
                message.len += take as u64;
                unmask_onto(&mut self.message_buf, chunk, mask, offset);
            }
        }
        if frame.remaining == 0 {
            self.finish_frame(frame);
        }
        take
    }

    fn finish_frame(&mut self, frame: FrameInProgress) {
        self.frame = None;
        match frame.header.opcode {
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                if frame.header.fin {
                    self.finish_message();
                }
            }
            OpCode::Ping => {
                let payload = mem::take(&mut self.control_buf);
                // No pong once our close frame went out: nothing may follow it.
                if self.config.auto_pong && !self.close_sent {
                    self.queue_pong(&payload);
                }
                self.events
                    .push_back(Event::Ping(Bytes::copy_from_slice(&payload)));
                self.control_buf = payload;
            }
            OpCode::Pong => {
                self.events
                    .push_back(Event::Pong(Bytes::copy_from_slice(&self.control_buf)));
            }
            OpCode::Close => self.handle_close_frame(),
        }
    }

    fn finish_message(&mut self) {
        if self.message.as_ref().is_some_and(|m| m.compressed) {
            // The four octets the sender removed (RFC 7692 §7.2.2).
            if let Err(err) = self.inflate(&TAIL) {
                self.fail(err);
                return;
            }
            if let Some(inflater) = self.inflater() {
                inflater.end_message();
            }
        }
        let Some(message) = self.message.take() else {
            return;
        };
        let event = if message.text {
            let complete = self.utf8.is_complete();
            self.utf8.reset();
            if !complete {
                // The message ends inside a code point.
                self.fail(ProtocolError::InvalidUtf8 {
                    valid_up_to: self.text_buf.len(),
                });
                return;
            }
            Event::Text(self.take_text())
        } else {
            Event::Binary(self.take_binary())
        };
        self.events.push_back(event);
    }

    fn take_text(&mut self) -> String {
        if self.text_buf.len() <= COPY_OUT_MAX {
            let text = self.text_buf.as_str().to_owned();
            self.text_buf.clear();
            text
        } else {
            mem::take(&mut self.text_buf)
        }
    }

    fn take_binary(&mut self) -> Bytes {
        let data = if self.message_buf.len() <= COPY_OUT_MAX {
            let data = Bytes::copy_from_slice(&self.message_buf);
            self.message_buf.clear();
            data
        } else {
            Bytes::from(mem::take(&mut self.message_buf))
        };
        self.release_large_buffer();
        data
    }

    fn release_large_buffer(&mut self) {
        if self.message_buf.capacity() > RETAIN_MAX {
            self.message_buf = Vec::new();
        }
        if self.text_buf.capacity() > RETAIN_MAX {
            self.text_buf = String::new();
        }
    }

    fn handle_close_frame(&mut self) {
        let frame = match parse_close_body(&self.control_buf) {
            Ok(frame) => frame,
            Err(err) => {
                self.fail(err);
                return;
            }
        };
        if !self.close_sent {
            // Answer with the peer's code (RFC 6455 §5.5.1); an empty close is
            // answered with an empty close. It goes out when this event is polled.
            let mut body = Vec::with_capacity(2);
            if let Some(code) = frame.code {
                body.extend_from_slice(&code.0.to_be_bytes());
            }
            self.pending_close = Some(body);
        }
        self.state = ConnectionState::Closed;
        self.message = None;
        self.events.push_back(Event::Close(frame));
    }

    /// Fails the connection: the error is reported and kept, no more input is read,
    /// and the close frame for it (if ours had not gone yet) is written when the
    /// caller polls the [`Event::Failed`].
    fn fail(&mut self, err: ProtocolError) {
        if !self.close_sent {
            self.pending_close = Some(failure_close_body(&err));
        }
        self.state = ConnectionState::Closed;
        self.frame = None;
        self.message = None;
        self.error = Some(err.clone());
        self.events.push_back(Event::Failed(err));
        if let Some(inflater) = self.inflater() {
            inflater.release();
        }
    }

    // ------------------------------------------------------------------- sending

    /// Sends a text message (split into frames when [`Config::send_fragment_size`]
    /// is set).
    pub fn send_text(&mut self, text: &str) -> Result<(), SendError> {
        self.send_data(OpCode::Text, text.as_bytes())
    }

    /// Sends a text message made of a shared `body` followed by a short `tail`: the
    /// shape of an envelope serialized once for many recipients, each adding its own
    /// sequence number. On a server connection a body of 256 bytes or more is queued by
    /// reference (a refcount, no copy); a client masks, so it copies.
    ///
    /// The caller guarantees that `body` followed by `tail` is valid UTF-8 (checked in
    /// debug builds only): a peer fails the connection with 1007 otherwise. The message
    /// is sent as one frame, whatever [`Config::send_fragment_size`] says.
    ///
    /// With permessage-deflate agreed, a message of [`Config::deflate_min_size`] bytes
    /// or more is compressed for this connection (its own context): nothing is shared
    /// then. To compress a broadcast once, see [`Connection::send_precompressed`].
    pub fn send_text_parts(&mut self, body: &Bytes, tail: &[u8]) -> Result<(), SendError> {
        debug_assert!(
            std::str::from_utf8(&[&body[..], tail].concat()).is_ok(),
            "send_text_parts: not UTF-8"
        );
        self.send_parts(OpCode::Text, body, tail)
    }

    /// Sends a binary message made of a shared `body` followed by a short `tail`, as
    /// [`send_text_parts`](Self::send_text_parts) does for text: the shape of a binary
    /// envelope encoded once for many recipients, each adding its own `s`.
    pub fn send_binary_parts(&mut self, body: &Bytes, tail: &[u8]) -> Result<(), SendError> {
        self.send_parts(OpCode::Binary, body, tail)
    }

    /// With permessage-deflate agreed and a message of [`Config::deflate_min_size`] or
    /// more, the two parts are compressed for this connection (fed to its compressor
    /// one after the other, never joined) and the compressed frame is copied.
    fn send_parts(&mut self, opcode: OpCode, body: &Bytes, tail: &[u8]) -> Result<(), SendError> {
        if !self.can_send() {
            return Err(SendError::Closed);
        }
        if let Some(buf) = self.compress(&[body, tail]) {
            self.write_data_frame(true, true, opcode, &buf);
            self.keep_deflate_buf(buf);
            return Ok(());
        }
        self.frame_parts(opcode, false, body, tail);
        Ok(())
    }

    /// The message made of `parts` compressed, in the compression scratch (give it
    /// back with [`keep_deflate_buf`](Self::keep_deflate_buf)); `None` when it goes
    /// out plain: no compression agreed, or shorter than
    /// [`Config::deflate_min_size`].
    fn compress(&mut self, parts: &[&[u8]]) -> Option<Vec<u8>> {
        let len: usize = parts.iter().map(|part| part.len()).sum();
        if len < self.config.deflate_min_size {
            return None;
        }
        let compression = self.compression.as_deref_mut()?;
        let mut buf = mem::take(&mut compression.buf);
        compression.deflater.compress(parts, &mut buf);
        Some(buf)
    }

    /// Puts the compression scratch back, unless a large message grew it.
    fn keep_deflate_buf(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() > RETAIN_MAX {
            buf = Vec::new();
        }
        if let Some(compression) = self.compression.as_deref_mut() {
            compression.buf = buf;
        }
    }

    /// Sends a message compressed once for many connections (a broadcast): the
    /// compressed payload is queued by reference on a server connection (a client
    /// masks, so it copies), with no compression work here.
    ///
    /// The shared payload is used when permessage-deflate was agreed and this end may
    /// compress with a 32 KiB window (no `*_max_window_bits` below 15 for our side).
    /// A message compressed by a fresh compressor references nothing before it, so any
    /// peer inflates it; when this end takes its context over
    /// (no `server_no_context_takeover` on a server), its own compressor is reset after
    /// it, since the peer's window now holds text ours never saw: the next message
    /// sent per connection starts afresh (that costs ratio, not correctness). With
    /// `server_no_context_takeover` nothing is lost, which makes it the setting for
    /// broadcast-heavy servers ([`Config::deflate_server_no_context_takeover`]).
    ///
    /// Otherwise (no compression agreed, a smaller window, or a payload that was not
    /// compressed) the plain payload is sent as [`Connection::send_text_parts`] would,
    /// compressed for this connection if it should be. Sent as one frame.
    pub fn send_precompressed(&mut self, message: &Precompressed) -> Result<(), SendError> {
        if !self.can_send() {
            return Err(SendError::Closed);
        }
        let opcode = if message.text {
            OpCode::Text
        } else {
            OpCode::Binary
        };
        match (
            &message.deflated,
            self.compression.as_deref_mut().map(|c| &mut c.deflater),
        ) {
            (Some(deflated), Some(deflater)) if deflater.full_window() => {
                deflater.reset();
                self.frame_parts(opcode, true, deflated, &[]);
                Ok(())
            }
            _ => self.send_parts(opcode, &message.plain, &[]),
        }
    }

    /// One frame of `body` then `tail`, the body queued by reference when it is large
    /// and nothing needs masking.
    fn frame_parts(&mut self, opcode: OpCode, rsv1: bool, body: &Bytes, tail: &[u8]) {
        const SHARE_MIN: usize = 256;
        let mask = self.masks.as_mut().map(|masks| masks.next_mask());
        let header = FrameHeader {
            fin: true,
            rsv: if rsv1 { 0b100 } else { 0 },
            opcode,
            mask,
            payload_len: (body.len() + tail.len()) as u64,
        };
        let copied = mask.is_some() || body.len() < SHARE_MIN;
        self.reserve_out(MAX_HEADER_LEN + if copied { body.len() } else { 0 } + tail.len());
        header.encode(&mut self.out);
        if copied {
            // Copied straight into the output (and masked there): one copy.
            let start = self.out.len();
            self.out.extend_from_slice(body);
            self.out.extend_from_slice(tail);
            if let Some(mask) = mask {
                apply_mask(&mut self.out[start..], mask, 0);
            }
            return;
        }
        self.out_queue.push_back(self.out.split().freeze());
        self.out_queue.push_back(body.clone());
        self.out.extend_from_slice(tail);
    }

    /// Sends a binary message whose payload is shared: on a server connection a
    /// payload of 256 bytes or more is queued by reference (a refcount, no copy); a
    /// client masks, so it copies. Sent as one frame.
    pub fn send_binary_shared(&mut self, payload: &Bytes) -> Result<(), SendError> {
        self.send_parts(OpCode::Binary, payload, &[])
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.send_data(OpCode::Binary, data)
    }

    /// Sends a ping with up to 125 bytes of application data.
    pub fn send_ping(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Ping, data)
    }

    /// Sends an unsolicited pong (a heartbeat the peer need not answer).
    pub fn send_pong(&mut self, data: &[u8]) -> Result<(), SendError> {
        self.send_control(OpCode::Pong, data)
    }

    /// Sends a [`Message`] of any kind.
    pub fn send(&mut self, message: &Message) -> Result<(), SendError> {
        match message {
            Message::Text(text) => self.send_text(text),
            Message::Binary(data) => self.send_binary(data),
            Message::Ping(data) => self.send_ping(data),
            Message::Pong(data) => self.send_pong(data),
            Message::Close(Some(frame)) => self.close(frame.code.unwrap_or(CloseCode::NORMAL), &frame.reason),
            Message::Close(None) => self.close(CloseCode::NORMAL, ""),
        }
    }

    /// Whether messages may still be sent: until our close frame is queued. After the
    /// peer's close or a failure, answers to the events polled before it still go out.
    fn can_send(&self) -> bool {
        !self.close_sent && (self.state != ConnectionState::Closed || self.pending_close.is_some())
    }

    /// Starts the closing handshake: sends a close frame with `code` and `reason`
    /// (at most 123 bytes). Messages that still arrive are delivered until the peer's
    /// close frame; then the connection is [`ConnectionState::Closed`].
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        if self.close_sent || self.state == ConnectionState::Closed {
            // Closed, or a close answering the peer is already owed.
            return Err(SendError::Closed);
        }
        let body = close_body(code, reason)?;
        self.write_frame(OpCode::Close, &body);
        self.close_sent = true;
        self.state = ConnectionState::Closing;
        Ok(())
    }

    /// Queues bytes that already are whole, unmasked frames (for example a broadcast
    /// payload framed once with [`encode_frame`] and shared by many connections).
    /// The bytes go out in order with everything else sent on this connection.
    ///
    /// Server role only: a client must mask every frame with its own key.
    pub fn send_preframed(&mut self, frames: Bytes) -> Result<(), SendError> {
        if !self.can_send() || self.role == Role::Client {
            return Err(SendError::Closed);
        }
        if !self.out.is_empty() {
            self.out_queue.push_back(self.out.split().freeze());
        }
        self.out_queue.push_back(frames);
        Ok(())
    }

    /// The next bytes to write to the transport, in order, or `None` when all have
    /// been handed out. Write each chunk completely before the next.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if let Some(chunk) = self.out_queue.pop_front() {
            return Some(chunk);
        }
        self.flush_coalesced_pong();
        // Everything is handed out now: pongs may queue again.
        self.queued_pongs = 0;
        // Everything is handed out, buffers and all: a split would keep the allocation
        // alive in `out`, and an idle connection would hold its last batch's buffer.
        if self.out_queue.capacity() > 0 {
            self.out_queue = VecDeque::new();
        }
        (!self.out.is_empty()).then(|| std::mem::take(&mut self.out).freeze())
    }

    /// Bytes waiting in [`Connection::poll_transmit`]: what backpressure accounting
    /// should look at. Queued pongs count like everything else.
    pub fn pending_transmit_len(&self) -> usize {
        let pong = self.coalesced_pong.as_ref().map_or(0, |payload| {
            2 + payload.len() + if self.masks.is_some() { 4 } else { 0 }
        });
        self.out.len() + self.out_queue.iter().map(Bytes::len).sum::<usize>() + pong
    }

    /// Answers a ping: a pong of its own while fewer than
    /// [`Config::max_queued_pongs`] wait to be taken, else the latest ping's payload
    /// replaces whatever was coalesced before.
    fn queue_pong(&mut self, payload: &[u8]) {
        if self.queued_pongs < self.config.max_queued_pongs {
            self.queued_pongs += 1;
            self.write_frame(OpCode::Pong, payload);
        } else {
            let slot = self.coalesced_pong.get_or_insert_with(Vec::new);
            slot.clear();
            slot.extend_from_slice(payload);
        }
    }

    /// Writes the coalesced pong, if any, behind everything queued so far.
    fn flush_coalesced_pong(&mut self) {
        if let Some(payload) = self.coalesced_pong.take() {
            self.write_frame(OpCode::Pong, &payload);
        }
    }

    fn send_data(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        if !self.can_send() {
            return Err(SendError::Closed);
        }
        if let Some(buf) = self.compress(&[payload]) {
            self.write_message(opcode, &buf, true);
            self.keep_deflate_buf(buf);
        } else {
            self.write_message(opcode, payload, false);
        }
        Ok(())
    }

    /// Writes a data message, fragmented per [`Config::send_fragment_size`]; RSV1 on
    /// its first frame only when `compressed`.
    fn write_message(&mut self, opcode: OpCode, payload: &[u8], compressed: bool) {
        match self.config.send_fragment_size {
            Some(size) if size > 0 && payload.len() > size => {
                let mut chunks = payload.chunks(size).peekable();
                let mut op = opcode;
                let mut rsv1 = compressed;
                while let Some(chunk) = chunks.next() {
                    let fin = chunks.peek().is_none();
                    self.write_data_frame(fin, rsv1, op, chunk);
                    op = OpCode::Continuation;
                    rsv1 = false;
                }
            }
            _ => self.write_data_frame(true, compressed, opcode, payload),
        }
    }

    fn write_data_frame(&mut self, fin: bool, rsv1: bool, opcode: OpCode, payload: &[u8]) {
        if !rsv1 {
            return self.write_frame_fin(fin, opcode, payload);
        }
        let mask = self.masks.as_mut().map(|masks| masks.next_mask());
        let header = FrameHeader {
            fin,
            rsv: 0b100,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        self.reserve_out(MAX_HEADER_LEN + payload.len());
        header.encode(&mut self.out);
        let start = self.out.len();
        self.out.extend_from_slice(payload);
        if let Some(mask) = mask {
            apply_mask(&mut self.out[start..], mask, 0);
        }
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), SendError> {
        if !self.can_send() {
            return Err(SendError::Closed);
        }
        if payload.len() > 125 {
            return Err(SendError::ControlPayloadTooLarge { len: payload.len() });
        }
        self.write_frame(opcode, payload);
        Ok(())
    }

    fn write_frame(&mut self, opcode: OpCode, payload: &[u8]) {
        self.write_frame_fin(true, opcode, payload);
    }

    fn write_frame_fin(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) {
        if opcode == OpCode::Close {
            // A pong still owed goes before our close frame: nothing may follow it.
            self.flush_coalesced_pong();
        }
        let mask = self.masks.as_mut().map(|masks| masks.next_mask());
        self.reserve_out(MAX_HEADER_LEN + payload.len());
        encode_frame(&mut self.out, fin, opcode, payload, mask);
    }

    /// Makes room for a frame of `len` bytes in the output. The output is handed out
    /// whole ([`poll_transmit`](Self::poll_transmit)) and starts again from nothing
    /// (an idle connection holds no buffer); its first allocation after that has
    /// room for a batch of small frames, where growing from the first frame's size
    /// took an allocation and several reallocations per batch.
    fn reserve_out(&mut self, len: usize) {
        const BATCH_START: usize = 1024;
        if self.out.capacity() == 0 {
            self.out.reserve(len.max(BATCH_START));
        }
    }
}

/// Appends `chunk` to `buf`, unmasked with `mask` from mask position `offset`.
fn unmask_onto(buf: &mut Vec<u8>, chunk: &[u8], mask: Option<[u8; 4]>, offset: usize) {
    let start = buf.len();
    buf.extend_from_slice(chunk);
    if let Some(mask) = mask {
        apply_mask(&mut buf[start..], mask, offset);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::{Config, Connection};

    #[test]
    fn once_everything_is_handed_out_the_connection_holds_no_output_buffer() {
        let mut conn = Connection::server(Config::default());
        conn.send_text("a small message").unwrap();
        conn.send_binary_shared(&Bytes::from(vec![7; 1024])).unwrap();
        conn.send_text("after the shared one").unwrap();
        assert!(conn.out.capacity() > 0 && conn.out_queue.capacity() > 0);
        let mut chunks = 0;
        let mut bytes = 0;
        while let Some(chunk) = conn.poll_transmit() {
            chunks += 1;
            bytes += chunk.len();
        }
        assert_eq!((chunks, bytes), (3, 2 + 15 + 4 + 1024 + 2 + 20));
        assert_eq!(conn.pending_transmit_len(), 0);
        assert_eq!(conn.out.capacity(), 0, "the last chunk took the buffer with it");
        assert_eq!(conn.out_queue.capacity(), 0);
        // And the next message is framed as before.
        conn.send_text("again").unwrap();
        assert_eq!(conn.poll_transmit().as_deref(), Some(&b"\x81\x05again"[..]));
        assert_eq!(conn.poll_transmit(), None);
    }
}
