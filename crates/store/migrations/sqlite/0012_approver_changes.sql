-- Two-person control of who approves: a proposal may carry, instead of a policy set, one
-- change to who decides approvals (a member added to an approver group, an administrator
-- made), as JSON; NULL for policy sets. Identical in both dialects.

ALTER TABLE policy_proposals ADD COLUMN approver_change TEXT;
