//! Course-style Flask servers (HTTP only).
