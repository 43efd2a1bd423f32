//! The event loop's mio tokens: fixed ones for the waker and listeners, and one
//! per socket above them (an index into the loop's socket-owner slab). The only
//! token arithmetic lives here.

use mio::Token;

pub const WAKER: Token = Token(0);
pub const OUTBOUND: Token = Token(1);
pub const ADMIN: Token = Token(2);
pub const INBOUND: Token = Token(3);
const FIRST_SOCKET: usize = 16;

/// The token of socket-slab entry `index`.
pub fn socket(index: usize) -> Token {
    Token(FIRST_SOCKET + index)
}

/// The socket-slab index of `token`, if it is a socket token.
pub fn socket_index(token: Token) -> Option<usize> {
    token.0.checked_sub(FIRST_SOCKET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_tokens_round_trip_and_skip_fixed_ones() {
        assert_eq!(socket_index(socket(0)), Some(0));
        assert_eq!(socket_index(socket(42)), Some(42));
        for fixed in [WAKER, OUTBOUND, ADMIN, INBOUND] {
            assert_eq!(socket_index(fixed), None);
        }
    }
}
