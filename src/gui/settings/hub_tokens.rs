//! The "Hub tokens" section, for a node that holds the hub's admin token (express setup with
//! the hub in this data dir): the hub's viewer tokens (the status page) and metrics tokens
//! (Prometheus), made (shown once), listed and revoked, and the admin token rotated (this node
//! keeps the new one). Everything goes through the service thread; the list is asked for again
//! after every change. A node without the token says who manages tokens instead.

use eframe::egui;

use crate::gui::ops::{Op, OpKind};
use crate::gui::outbox::{Answers, Outbox, Reply};
use crate::gui::widgets;
use crate::protocol::TokenKind;

/// One token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub kind: String,
    pub created: String,
    /// When it was revoked; empty while it works.
    pub revoked: String,
}

impl TokenRow {
    /// A line of the list answer ([`crate::gui::ops::token_line`]).
    fn parse(line: &str) -> Option<TokenRow> {
        let mut fields = line.split('\t');
        Some(TokenRow {
            id: fields.next()?.to_owned(),
            kind: fields.next()?.to_owned(),
            created: fields.next()?.to_owned(),
            revoked: fields.next().unwrap_or_default().to_owned(),
        })
    }
}

/// The section's state.
#[derive(Default)]
pub struct HubTokensSection {
    /// Whether this node holds the hub's admin token (`None`: not known yet; the Thresholds
    /// section asks, and its answer comes here too).
    pub admin: Option<bool>,
    /// The tokens as last listed (`None`: to be listed).
    pub tokens: Option<Vec<TokenRow>>,
    /// A token whose revocation, or the admin token's rotation ("admin"), waits for a second
    /// click.
    pub confirm: Option<String>,
    pub answers: Answers,
}

const ROTATE: &str = "admin";

impl HubTokensSection {
    pub(super) fn done(&mut self, op: OpKind, result: &Result<String, String>) {
        match op {
            OpKind::AdminToken => {
                self.admin = Some(result.is_ok());
                return;
            }
            OpKind::HubTokenList => {
                // An empty list after an error, so it isn't asked for again every frame.
                self.tokens =
                    Some(result.iter().flat_map(|lines| lines.lines()).filter_map(TokenRow::parse).collect());
                if result.is_ok() {
                    self.answers.forget(op);
                    return;
                }
            }
            // List again, whatever happened: the list shows what the hub really holds.
            _ => self.tokens = None,
        }
        self.answers.done(op, result);
    }

    /// Asks for the list when this node holds the admin token and there is none yet.
    pub(super) fn refresh(&mut self, outbox: &Outbox) {
        if self.admin == Some(true) && self.tokens.is_none() && !self.answers.waiting(OpKind::HubTokenList) {
            self.answers.send(outbox, Op::ListHubTokens);
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, outbox: &Outbox) {
        if self.admin != Some(true) {
            widgets::paragraph(
                ui,
                "Tokens for the hub's status page (viewer) and for Prometheus (metrics) are made by the hub's \
                 admin, with: gatehouse hub token create --viewer (or --metrics). A node set up with express \
                 setup, whose data dir holds the hub, manages them here.",
            );
            return;
        }
        widgets::paragraph(
            ui,
            "Viewer tokens open the hub's status page (give one as the password in a browser); metrics \
             tokens let Prometheus scrape /metrics. A new token is shown once: the hub keeps only its hash.",
        );
        let busy = self.answers.waiting(OpKind::HubTokens);
        ui.horizontal(|ui| {
            if widgets::button(ui, !busy, "New viewer token") {
                self.answers.send(outbox, Op::CreateHubToken(TokenKind::Viewer));
            }
            if widgets::button(ui, !busy, "New metrics token") {
                self.answers.send(outbox, Op::CreateHubToken(TokenKind::Metrics));
            }
        });
        // The answer to a new token holds the token: shown here, this once.
        widgets::reply(ui, self.answers.get(OpKind::HubTokens));
        widgets::reply(ui, self.answers.get(OpKind::HubTokenList));
        match &self.tokens {
            None => widgets::waiting(ui, "Reading the hub's tokens…"),
            Some(_) if matches!(self.answers.get(OpKind::HubTokenList), Some(Reply::Done(Err(_)))) => {}
            Some(rows) if rows.is_empty() => {
                ui.label("No viewer or metrics tokens yet.");
            }
            Some(rows) => {
                let rows = rows.clone();
                self.list_ui(ui, &rows, busy, outbox);
            }
        }
        ui.add_space(6.0);
        widgets::paragraph(
            ui,
            "Rotating the admin token makes a new one that this node keeps (sealed); the old one stops \
             working at once, wherever it is kept.",
        );
        if self.confirm.as_deref() == Some(ROTATE) {
            ui.horizontal(|ui| {
                if widgets::button(ui, !busy, "Yes, rotate the admin token") {
                    self.confirm = None;
                    self.answers.send(outbox, Op::RotateAdminToken);
                }
                if ui.button("Cancel").clicked() {
                    self.confirm = None;
                }
            });
        } else if widgets::button(ui, !busy, "Rotate the admin token") {
            self.confirm = Some(ROTATE.to_owned());
        }
    }

    /// The tokens, each working one with Revoke (then "Yes, revoke" and Cancel).
    fn list_ui(&mut self, ui: &mut egui::Ui, rows: &[TokenRow], busy: bool, outbox: &Outbox) {
        egui::Grid::new("hub_tokens").num_columns(4).striped(true).spacing([12.0, 4.0]).show(ui, |ui| {
            for row in rows {
                ui.monospace(&row.id);
                ui.label(&row.kind);
                ui.label(format!("made {}", row.created));
                if !row.revoked.is_empty() {
                    ui.label(format!("revoked {}", row.revoked));
                } else if self.confirm.as_ref() == Some(&row.id) {
                    ui.horizontal(|ui| {
                        if widgets::button(ui, !busy, &format!("Yes, revoke {}", row.id)) {
                            self.confirm = None;
                            self.answers.send(outbox, Op::RevokeHubToken(row.id.clone()));
                        }
                        if ui.button("Cancel").clicked() {
                            self.confirm = None;
                        }
                    });
                } else if widgets::button(ui, !busy, &format!("Revoke {}", row.id)) {
                    self.confirm = Some(row.id.clone());
                }
                ui.end_row();
            }
        });
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;
    use crate::gui::service::Request;
    use crate::gui::testing::{self, Alone, asked_op, click, sent, shows};

    fn section(admin: Option<bool>, tokens: Option<Vec<TokenRow>>) -> testing::Page<HubTokensSection> {
        let page = HubTokensSection { admin, tokens, ..HubTokensSection::default() };
        testing::page(page, testing::running(), |ui, alone: &mut Alone<HubTokensSection>| {
            alone.page.ui(ui, &alone.outbox);
        })
    }

    fn row(id: &str, revoked: &str) -> TokenRow {
        TokenRow {
            id: id.to_owned(),
            kind: "viewer".to_owned(),
            created: "2026-12-02T07:00:00Z".to_owned(),
            revoked: revoked.to_owned(),
        }
    }

    #[test]
    fn without_the_admin_token_it_names_the_command_and_asks_nothing() {
        let harness = section(Some(false), None);
        assert!(shows(&harness, "gatehouse hub token create --viewer"));
        assert!(!shows(&harness, "New viewer token"));
        let outbox = Outbox::default();
        let mut page = HubTokensSection { admin: Some(false), ..HubTokensSection::default() };
        page.refresh(&outbox);
        assert!(outbox.is_empty(), "the tokens were asked for without the admin token");
    }

    #[test]
    fn tokens_are_made_listed_and_revoked_after_a_second_click() {
        let mut harness = section(Some(true), Some(vec![row("t-1", ""), row("t-2", "2026-12-02T08:00:00Z")]));
        assert!(shows(&harness, "revoked 2026-12-02T08:00:00Z"));
        assert!(!shows(&harness, "Revoke t-2"), "a revoked token can be revoked again");
        click(&mut harness, "New viewer token");
        assert!(matches!(asked_op(&harness), Op::CreateHubToken(TokenKind::Viewer)));
        // The answer holds the token, shown once; the list is read again.
        harness.state_mut().page.done(OpKind::HubTokens, &Ok("viewer token t-3 made: ghv_secret".to_owned()));
        harness.step();
        assert!(shows(&harness, "viewer token t-3 made: ghv_secret"));
        assert!(harness.state().page.tokens.is_none(), "the list wasn't asked for again after a change");
        let outbox = Outbox::default();
        harness.state_mut().page.refresh(&outbox);
        assert!(matches!(outbox.drain().as_slice(), [Request::Op(Op::ListHubTokens)]));

        let mut harness = section(Some(true), Some(vec![row("t-1", "")]));
        click(&mut harness, "Revoke t-1");
        assert!(sent(&harness).is_empty(), "the first click revoked");
        click(&mut harness, "Yes, revoke t-1");
        assert!(matches!(asked_op(&harness), Op::RevokeHubToken(id) if id == "t-1"));
    }

    #[test]
    fn the_admin_token_is_rotated_after_a_second_click_and_a_stale_one_says_so() {
        let mut harness = section(Some(true), Some(Vec::new()));
        assert!(shows(&harness, "No viewer or metrics tokens yet."));
        click(&mut harness, "Rotate the admin token");
        assert!(sent(&harness).is_empty(), "the first click rotated");
        click(&mut harness, "Yes, rotate the admin token");
        assert!(matches!(asked_op(&harness), Op::RotateAdminToken));

        let stale = "the hub refused the admin token this node keeps: it was replaced";
        harness.state_mut().page.done(OpKind::HubTokenList, &Err(stale.to_owned()));
        harness.step();
        assert!(shows(&harness, stale));
        assert!(!shows(&harness, "No viewer or metrics tokens yet."), "a refusal shows as an empty list");
    }

    #[test]
    fn list_lines_parse_into_rows() {
        let line = crate::gui::ops::token_line(&crate::protocol::TokenInfo {
            id: "t-9".to_owned(),
            kind: TokenKind::Metrics,
            created_ms: 0,
            revoked_ms: None,
            gateway: None,
        });
        let parsed = TokenRow::parse(&line).unwrap();
        assert_eq!(
            (parsed.id.as_str(), parsed.kind.as_str(), parsed.revoked.as_str()),
            ("t-9", "metrics", "")
        );
        assert!(parsed.created.starts_with("1970-01-01"), "{}", parsed.created);
    }
}
