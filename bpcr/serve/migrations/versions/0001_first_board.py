"""The first board: settings, members, blobs, submissions.

Revision ID: 0001
Revises:
Create Date: the first version of bpcr serve
"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_settings"),
    )
    op.create_table(
        "members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(20), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_members"),
        sa.UniqueConstraint("name", name="uq_members_name"),
        sa.UniqueConstraint("token_sha256", name="uq_members_token_sha256"),
    )
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name="pk_blobs"),
    )
    op.create_table(
        "submissions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("csv_sha256", sa.String(64), nullable=False),
        sa.Column("json_sha256", sa.String(64), nullable=True),
        sa.Column("created_at", sa.String(20), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("inputs", sa.Text(), nullable=True),
        sa.Column("n_queries", sa.Integer(), nullable=False),
        sa.Column("scores", sa.Text(), nullable=False),
        sa.Column("per_query", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name="fk_submissions_member_id_members"),
        sa.ForeignKeyConstraint(["csv_sha256"], ["blobs.sha256"], name="fk_submissions_csv_sha256_blobs"),
        sa.ForeignKeyConstraint(["json_sha256"], ["blobs.sha256"], name="fk_submissions_json_sha256_blobs"),
        sa.PrimaryKeyConstraint("id", name="pk_submissions"),
    )
    op.create_index("ix_submissions_member_day", "submissions", ["member_id", "day"])


def downgrade() -> None:
    op.drop_index("ix_submissions_member_day", table_name="submissions")
    op.drop_table("submissions")
    op.drop_table("blobs")
    op.drop_table("members")
    op.drop_table("settings")
