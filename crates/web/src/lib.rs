//! What the technician app (at the gateway) and the office console and consumer page (at central)
//! share, so each page set holds only its own pages:
//!
//! - `session`: sessions with idle and maximum age, the lockout rule, random and CSRF tokens;
//! - `password`: Argon2id hashes in PHC form, made and checked;
//! - `lang` and `format`: English/Hindi and the Indian formats for money, energy and times;
//! - `chart`: a load chart as inline SVG (no script, no image request);
//! - `http`: HTML responses with the headers every page needs, cookies.
//!
//! It holds no page and no business rule.

pub mod chart;
pub mod format;
pub mod http;
pub mod lang;
pub mod password;
pub mod session;
