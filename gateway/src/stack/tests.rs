//! The gateway's layers on mocks.
